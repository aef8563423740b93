"""The notebooks' shared experiment folder (:class:`~qparse_lite.pipeline.workspace.Workspace`) and
``qparse reproduce``, which runs every chapter with papermill and writes ``report.md``.
"""
