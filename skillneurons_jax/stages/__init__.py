"""The stage library: one function per stage of the study, each taking a loaded model (a `setup.TaskSetup` or a
`models.LoadedModel`), the task, options and a workdir; never a path to load, never flags, never configs/.

    tune.tune(setup, seeds, workdir, data_dir, tune_config, model_path=...)             -> summary dict
    evaluate.evaluate(setup, prompt_files, encoded, eval_batch_size, mesh)              -> result dict
    transfer.transfer([transfer.prepare_target(setup, ...)], source, seeds, workdir, ...)  -> [paths]
    predictivity.predictivity(setup, workdir, data_dir, seeds, ...)                     -> summary dict
    suppress.suppress(setup, source, workdir, data_dir, seeds, ...)                     -> summary dict
    activations.activations(loaded, texts, batch_size=..., max_tokens=...)              -> arrays

launch/*.py parse flags, load the model (stages.setup.make_setup) and call one of these; the pipeline
(skillneurons_jax.pipeline) calls them with the models its Session keeps loaded. Output paths: layout.py.
"""
