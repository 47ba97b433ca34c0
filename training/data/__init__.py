"""The trainer's data, prepared once and read by every rank: token builds (`tokenized`), SFT
examples (`sft_data`, `sft_prepared`), `proximity train prepare` (`prepare`), the step's batch
as a pure function of (seed, step) (`sampler`) and its background loader (`batches`).

A package of its own so that the tree reads in the order the work happens: data -> loop ->
grid (docs/ARCHITECTURE.md)."""
