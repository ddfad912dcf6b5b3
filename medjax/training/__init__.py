"""Training: the state, the step, the evaluator, the loop and what the loop logs."""
