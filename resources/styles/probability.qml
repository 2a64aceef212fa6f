<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- Ice probability raster of hiriseice:detect (model/scoremap.py): the chunk layer's classes and colours
     (processing_provider/styling.py CHUNK_CLASSES, model/report.py RAMP), so a colour means the same on both: transparent below 0.2,
     faint blue-green to 0.4 (not icy), pale green and pale yellow to 0.6 (hard to identify), orange and red above (icy);
     no-data (-1) transparent. DISCRETE: each item colours the values up to its own. -->
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
        <colorrampshader colorRampType="DISCRETE" classificationMode="2" clip="0" minimumValue="0" maximumValue="1" labelPrecision="2">
          <item alpha="0" value="0.2" label="0.0 – 0.2  not icy (not drawn)" color="#ffffff"/>
          <item alpha="90" value="0.4" label="0.2 – 0.4  not icy" color="#8bc6aa"/>
          <item alpha="255" value="0.5" label="0.4 – 0.5  hard to identify" color="#d5eeb2"/>
          <item alpha="255" value="0.6" label="0.5 – 0.6  hard to identify" color="#fed690"/>
          <item alpha="255" value="0.8" label="0.6 – 0.8  icy" color="#f48950"/>
          <item alpha="255" value="inf" label="0.8 – 1.0  icy" color="#e03e2d"/>
          <rampLegendSettings useContinuousLegend="0" prefix="" suffix="" minimumLabel="" maximumLabel="" orientation="2" direction="0"/>
        </colorrampshader>
      </rastershader>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
