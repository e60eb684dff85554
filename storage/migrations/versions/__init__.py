"""One module per revision, applied in order by `storage.engine.upgrade`."""
