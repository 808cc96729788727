"""Evaluation of trained runs: every metric of `latentlab.metrics` applied to a tokenizer run
(`evaluate_tokenizer_run`) or a generator run (`evaluate_generator_run`), and the probe
generator behind the predictability figure (`probe.predictability`), with the views samples are
scored in (`views`) and the judge networks behind them, trained once per dataset and cached
(`features`: the domain classifier; `ssl`: the self-supervised encoder; `attributes`: the
attribute judge behind prompt adherence, scored by `adherence`). `latentlab evaluate
RUN` is the command. Imported lazily by name: each module pulls in torchmetrics and scikit-learn.
"""
