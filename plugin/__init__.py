"""GUI glue of HiRISE Ice Patches: menu, toolbar, labelling actions, layer styles."""
