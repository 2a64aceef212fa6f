<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- Ice probability raster of hiriseice:detect (model/scoremap.py): transparent below 0.2, then
     yellow (0.2) through orange (0.6, the paper's icy threshold) to red (0.8 and above); no-data (-1) transparent. -->
<qgis version="3.22.0" styleCategories="AllStyleCategories" hasScaleBasedVisibilityFlag="0" minScale="1e+08" maxScale="0">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="0.75" alphaBand="-1" classificationMin="0" classificationMax="1" nodataColor="">
      <rasterTransparency/>
      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="2" clip="0" minimumValue="0" maximumValue="1" labelPrecision="2">
          <item alpha="0" value="0" label="below 0.2 (transparent)" color="#ffff00"/>
          <item alpha="0" value="0.1999" label="" color="#ffff00"/>
          <item alpha="255" value="0.2" label="0.2" color="#ffff00"/>
          <item alpha="255" value="0.4" label="0.4 hard to identify" color="#ffd000"/>
          <item alpha="255" value="0.6" label="0.6 icy" color="#ff8c00"/>
          <item alpha="255" value="0.8" label="0.8" color="#e31a1c"/>
          <item alpha="255" value="1" label="1" color="#b10026"/>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
