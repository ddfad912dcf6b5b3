"""Training: the state, the step, the evaluator, the loop and what the loop logs.

One job per module:
  state          TrainState and its initialisation from a config
  mesh           the data-parallel device mesh; global batches from per-host slices
  multihost      several processes as one job: jax.distributed, barriers, stop agreement
  step           the pure jitted train step, with the config's loss and augmentation
  evaluator      whole-volume validation (`evaluate`, and the loop's `Evaluator`)
  metric_window  the train/* scalars of each log window (`MetricWindow`)
  tensorboard    the event file of a fresh or resumed run; hparams
  preemption     SIGTERM/SIGINT as a request to checkpoint and stop (`StopRequest`)
  checks         config checks run before anything is written
  workdir        the workdir's write probe and the preprocessing a resumed run saved
  loop           `train_and_evaluate(config, workdir)`
"""
