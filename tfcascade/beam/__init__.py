"""Apache Beam jobs (the ``beam`` extra): ``preprocess.run_preprocess`` turns RecFlow-format logs
into TFRecords, dead letters and vocabularies on any Beam runner."""

from tfcascade._extras import require_extra

require_extra("apache_beam", "beam", "tfcascade.beam")
