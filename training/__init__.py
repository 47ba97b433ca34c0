"""The compact trainer: pretrain, midtrain, continued pretraining and SFT of Pythia-style models.

Layout (data flows top to bottom; everything reads data and tokenizers through proximity/):

    tokenizer_training.py  `proximity tokenizer train`: a small byte-level BPE (GPT-NeoX recipe)
    tokenized.py           tokenise a dataset once to memory-mapped train/val token streams
    sampler.py             packed seq_len+1 windows; per-sequence mixture sampling by (seed, step)
    sft_data.py            prompt/response examples -> padded ids and labels (prompt masked)
    presets.py, config.py  model shapes (Pythia + micro) and the run configuration (YAML)
    schedule.py            warmup then cosine learning rate, a function of the global step
    checkpoint.py          checkpoints that resume exactly and load with from_pretrained
    evaluate.py            validation loss on held-out splits; the JSONL metrics file
    distributed.py         process-group setup for DDP under torchrun
    phases.py, loop.py     what differs between phases; the one training loop

Launch:

    proximity tokenizer train --corpus c4 --vocab-size 8192 --n-docs 2000 --out runs/tokenizer-8k
    proximity train pretrain --config configs/pretrain.yaml
"""
