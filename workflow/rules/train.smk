# The train and tune jobs of the run plan (pipeline/plan.py): commands, inputs and the params
# they read come from the plan, as in dvc.yaml.


rule tune:
    # a variant's hyperparameter grid on validation (first seed); see pipeline/stages/tune.py
    input:
        inputs=lambda w: plan.tune_inputs(config, run_of(w)),
        code=lambda w: code("tune", w.model),
    output:
        tuning=directory(plan.TUNE_DIR),
    params:
        read=lambda w: dotted(plan.model_params(config, w.split, w.model)),
        cmd=lambda w: plan.tune_command(config, run_of(w)),
    log:
        "logs/tune/{split}/{model}.log",
    priority: job_priority("tune")
    threads: lambda w: plan.run_threads(config, w.model)
    resources:
        mem_mb=MEM_MB["train"],
        gpu=GPUS,
        runtime=RUNTIME_MIN["tune"],
    shell:
        "{params.cmd}"


rule train:
    input:
        inputs=lambda w: plan.train_inputs(config, run_of(w)),
        code=lambda w: code("train", w.model),
    output:
        metrics=f"{plan.RUN_DIR}/metrics.json",
        history=f"{plan.RUN_DIR}/history.csv",
        per_user=f"{plan.RUN_DIR}/per_user.parquet",
        model=f"{plan.RUN_DIR}/model.pt",
    params:
        read=lambda w: dotted(plan.model_params(config, w.split, w.model)),
        cmd=lambda w: plan.train_command(config, run_of(w)),
    log:
        "logs/train/{split}/{model}/seed{seed}.log",
    priority: job_priority("train")
    threads: lambda w: plan.run_threads(config, w.model)
    resources:
        mem_mb=MEM_MB["train"],
        gpu=GPUS,
        runtime=RUNTIME_MIN["train"],
    shell:
        "{params.cmd}"
