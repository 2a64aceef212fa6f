"""Set the demo's detections beside what was drawn in its sample scene.

    .venv/bin/python scripts/demo_truth.py SCENE.json CHUNKS.gpkg

SCENE.json is written by ``python -m model sample-scene ... --describe``; the chunk ids of a
scene's 1024-px grid are those of detect's chunk layer at the default STRIDE.
"""

import json
import sys

from osgeo import ogr


def drawn(scene: dict, chunk_ids) -> dict:
    """chunk id -> what the scene holds there (the synthetic scene lists its icy chunks only)."""
    if "chunks" in scene:  # real terrain
        return {c["chunk_id"]: (f"ice: {c['family']}" if c["family"] else f"no ice: {c['lookalike']}") + f" ({c['observation']})"
                for c in scene["chunks"]}
    icy = set(scene["ice_chunks"])
    return {i: "ice: rendered caster" if i in icy else "no ice: bare caster, hot pixels, sunlit rocks" for i in chunk_ids}


def main(scene_path: str, gpkg: str) -> None:
    with open(scene_path) as handle:
        scene = json.load(handle)
    dataset = ogr.Open(gpkg)  # kept: its layer dies with it
    scored = {f.GetField("chunk_id"): (f.GetField("probability"), f.GetField("class")) for f in dataset.GetLayerByName("chunks")}
    what = drawn(scene, sorted(scored))
    print("\ndemo: what the sample scene holds, and what the default model said")
    print(f"  {'chunk':>5}  {'probability':>11}  {'class':<18} drawn")
    for chunk_id in sorted(what):
        if chunk_id in scored:
            p, label = scored[chunk_id]
            print(f"  {chunk_id:>5}  {p:>11.3f}  {label:<18} {what[chunk_id]}")
    icy = [i for i in what if what[i].startswith("ice") and i in scored]
    bare = [i for i in what if not what[i].startswith("ice") and i in scored]
    found = sum(scored[i][1] == "icy" for i in icy)
    unsure = sum(scored[i][1] == "hard to identify" for i in icy)
    false = sum(scored[i][1] == "icy" for i in bare)
    print(f"  found {found} of the {len(icy)} chunks with drawn ice (and {unsure} more 'hard to identify'); "
          f"called {false} of the {len(bare)} chunks without ice icy")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
