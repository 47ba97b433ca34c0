"""The compact trainer: pretrain, midtrain, continued pretraining and SFT of Pythia-style models.

Layout (data flows top to bottom; everything reads data and tokenizers through proximity/):

    tokenizer_training.py  `proximity tokenizer train`: a small byte-level BPE (GPT-NeoX recipe)
    tokenized.py           tokenise a dataset once (sharded, N processes) to memory-mapped
                           train/val token streams
    prepare.py             `proximity train prepare`: the builds a spec or a run config needs
    sampler.py             packed seq_len+1 windows; per-sequence mixture sampling by (seed, step)
    sft_data.py            prompt+response tokenised together, mask from offsets; O(tokens)
    presets.py, config.py  model shapes (Pythia + micro) and the run configuration (YAML)
    schedule.py            warmup then cosine learning rate, a function of the global step
    checkpoint.py          checkpoints that resume exactly and load with from_pretrained
    losses.py              the next-token losses (mean, token sum, chunked for evaluation)
    evaluate.py            fixed held-out sets and their token-weighted validation loss
    metrics_log.py         the append-only metrics.jsonl
    distributed.py         process-group setup for DDP under torchrun; rank-0 decisions
    phases.py              each phase's data (pretrain/midtrain packed mixtures, SFT epochs)
    starts.py              where each phase starts, checked against what it continues
    batches.py             the next step's batch built on a background thread (pinned on CUDA)
    throughput.py          tokens/s and MFU between logged steps; GPUs' peak FLOP/s
    loop.py                the one training loop

Launch:

    proximity tokenizer train --corpus c4 --vocab-size 8192 --n-docs 2000 --out runs/tokenizer-8k
    proximity train prepare --config configs/micro-pretrain.yaml --workers 2
    proximity train pretrain --config configs/micro-pretrain.yaml
"""
