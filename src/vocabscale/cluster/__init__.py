"""Cluster planning: what each training run costs (`cost`) and how long the corpus and
tokenizer jobs run (`cpu_jobs`), what every job asks SLURM for (`slurm`), the plan of the whole
grid (`plan`), the Snakemake rules' resources and retries made from it (`rules`), and the
command that prints it, `vocabscale plan` (`command`)."""
