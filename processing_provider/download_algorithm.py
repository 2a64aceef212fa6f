"""hiriseice:download - the JP2 and LBL of footprints found by hiriseice:find (model/download.py), in-process."""


from qgis.core import (
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from .algorithm import HiriseIceAlgorithm
from .engine import download, errors, files


class DownloadAlgorithm(HiriseIceAlgorithm):
    NAME = "download"
    DISPLAY_NAME = "Download HiRISE products"
    GROUP = "Data preparation"
    GROUP_ID = "preparation"
    STOPPED_LEAVES = "the files it had finished stay in the folder, and the next run resumes the one it was fetching"

    INPUT = "INPUT"
    FOLDER = "FOLDER"
    LABELS = "LABELS"
    IMAGES = "IMAGES"
    RETRIES = "RETRIES"
    DOWNLOADED = "DOWNLOADED"
    FAILED = "FAILED"
    BYTES = "BYTES"

    def shortHelpString(self):
        return self.tr(
            "<p>Downloads the JPEG2000 image and the PDS label of each footprint found by <i>Find HiRISE observations</i> "
            "(its <tt>jp2_url</tt> and <tt>lbl_url</tt> fields) into a folder. Tick <i>Selected features only</i> on the input "
            "to fetch the selection.</p>"
            "<p>Before starting it checks the folder has room for the sizes the index gives (ODE gives them; the CSV and "
            "RDRCUMINDEX do not, then only the server's sizes are checked). Files already complete are skipped. A cancelled or "
            "interrupted download keeps its partial file (<tt>.NAME.partial.JP2</tt>) and the next run resumes it with an HTTP Range "
            "request; a server that ignores Range restarts it from zero. Dropped connections and server errors are retried with "
            "back-off. A file whose size disagrees with the server or the index is not kept. One failed file does not stop the others.</p>"
            "<p>HiRISE RED JP2s are hundreds of MB to several GB each.</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(self.INPUT, self.tr("HiRISE footprints (from Find)"), [QgsProcessing.SourceType.TypeVectorAnyGeometry]))
        self.addParameter(QgsProcessingParameterBoolean(self.IMAGES, self.tr("Download the JP2 images"), True))
        self.addParameter(QgsProcessingParameterBoolean(self.LABELS, self.tr("Download the PDS labels (.LBL)"), True))
        self.addParameter(QgsProcessingParameterNumber(self.RETRIES, self.tr("Retries per file"), QgsProcessingParameterNumber.Type.Integer, 4, minValue=0, maxValue=20))
        self.addParameter(QgsProcessingParameterFolderDestination(self.FOLDER, self.tr("Download folder")))
        self.addOutput(QgsProcessingOutputNumber(self.DOWNLOADED, self.tr("Files downloaded or already present")))
        self.addOutput(QgsProcessingOutputNumber(self.FAILED, self.tr("Files failed")))
        self.addOutput(QgsProcessingOutputNumber(self.BYTES, self.tr("Bytes transferred")))

    def processAlgorithm(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        folder = self.parameterAsString(parameters, self.FOLDER, context)
        images = self.parameterAsBoolean(parameters, self.IMAGES, context)
        labels = self.parameterAsBoolean(parameters, self.LABELS, context)
        if not images and not labels:
            raise QgsProcessingException("Neither images nor labels were asked for: tick at least one.")
        try:
            footprints = source.getFeatures(QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry))
            items = download.footprint_items(source.fields().names(), footprints, images, labels)
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        if not items:
            raise QgsProcessingException("The input has no URLs to download (no features, or empty jp2_url/lbl_url).")
        known = [i.expected_bytes for i in items if i.expected_bytes is not None]
        feedback.pushInfo(
            f"{len(items)} files to {folder}" + (f"; the index gives the size of {len(known)} ({sum(known) / 1e9:.2f} GB)" if known else "; the index gives no sizes")
        )

        def progress(p):
            if p.bytes_total:
                feedback.setProgress(100.0 * min(1.0, p.bytes_done / p.bytes_total))
            elif p.files_total:
                feedback.setProgress(100.0 * p.files_done / p.files_total)
            feedback.setProgressText(f"{p.files_done}/{p.files_total} files, {p.bytes_done / 1e6:.1f} MB" + (f" of {p.bytes_total / 1e6:.1f} MB" if p.bytes_total else "") + (f" ({p.current})" if p.current else ""))

        try:
            files.check_folder(folder, self.FOLDER)
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        downloader = download.Downloader(
            folder, retries=self.parameterAsInt(parameters, self.RETRIES, context), progress=progress,
            is_cancelled=feedback.isCanceled, log=feedback.pushInfo, log_failures=False,  # each said below, once, as an error
        )
        try:
            results = downloader.run(items)
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        failed = [r for r in results if r.status == "failed"]
        transferred = sum(r.bytes for r in results)
        done = len(results) - len(failed)
        # where nothing arrived, the first failure is the run's own error: said once, not also here
        for r in failed[1:] if failed and not done else failed:
            feedback.reportError(f"{r.item.name}: {r.error}")
        feedback.pushInfo(f"{done} of {len(results)} files complete in {folder} ({transferred / 1e6:.1f} MB transferred), {len(failed)} failed")
        if failed and not done:
            more = f"; {len(failed) - 1} more failed, as said above" if len(failed) > 1 else ""
            raise QgsProcessingException(f"No file could be downloaded ({failed[0].item.name}: {failed[0].error.rstrip('.')}{more}).")
        return {self.FOLDER: folder, self.DOWNLOADED: done, self.FAILED: len(failed), self.BYTES: transferred}
