"""Evaluation of trained runs: every metric of `latentlab.metrics` applied to a tokenizer run
(`evaluate_tokenizer_run`) or a generator run (`evaluate_generator_run`), and the probe
generator behind the predictability figure (`probe.predictability`). `latentlab evaluate RUN`
is the command. Imported lazily by name: each module pulls in torchmetrics and scikit-learn.
"""
