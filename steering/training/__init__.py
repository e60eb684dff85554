"""Training the steerable policies (the algorithms are described in `trainer`).

- `config`: `TrainConfig`, the fields of `python -m steering train`.
- `pool`: candidate pools of sampled responses, written as they are made.
- `scoring`: a pool's objective scores, cached next to it.
- `records`: the named training examples and the one sampler of training weightings.
- `losses`: the pure pieces of the training objectives.
- `trainer`: `Trainer` and `train(config)`.
- `online`: online-dpo's rounds, sampled from the policy and trained on at once.
- `floor`: the quality floor: which answers online-dpo never chooses.
"""
