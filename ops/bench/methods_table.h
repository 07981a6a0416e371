// bench_finetune --methods-table: ESFT's method table on Tessera's task suite (issue 16, section 3).
//
// Per task (core/data/tasks.h; --tasks a,b,..., default every task) and per method, the same data
// (Task::Splits: train/validation/test), the same auto hyperparameters (auto_hparams.h with nothing set:
// steps, batch, warmup, early stopping on validation, the best checkpoint kept) and the same seed:
//   esft_gate   expert-only; per layer the fewest experts whose cumulative average gate weight
//               (expert_selection.h, RelevanceScore::kGate) reaches p_gate (default 0.1, the paper's)
//   esft_token  expert-only; likewise by token share (tokens routed to the expert / (tokens * top_k),
//               RelevanceScore::kToken), p_token (default 0.2)
//   auto        expert-only, the service's own selection for a job with every hyperparameter auto: the
//               mixed relevance score at the rule's p and expert budget (auto_hparams.h), as the suite
//   full        every parameter of a copy of the backbone; learning rate --full-lr (default 1e-3: the
//               auto rule's rate (3e-3) is for expert slots, not for every parameter)
//   lora        LoRA (lora_finetune.h, rank --lora-rank 8, alpha --lora-alpha 16) on esft_token's slots:
//               the same slots with low-rank deltas instead of their full weights
// --max-slots N caps each ESFT selection at the N highest-scoring slots (SelectionOptions::max_experts): a
// larger p within the 15% byte bound. Default: no cap, as the paper.
// --lr X sets the learning rate of the expert methods (esft_*, lora) instead of the auto rule's (3e-3): the
// general-ability change depends on it as much as on the method (ops/bench/RESULTS.md).
// Columns: exact match on the test split before -> after (greedy), best validation loss, steps run,
// wall time of the training, trainable parameters, version bytes (the stored overlay artifact; for full,
// the whole model's f32 safetensors) and as % of the model's bytes, and the general-ability change
// (general_ability.h): relative loss increase on 256 held-out documents of the pretraining mixture,
// token-accuracy change, exact-match change on the pretraining skills (records, words) and on the other
// tasks of the run.
// Then the goal per task: an ESFT method "meets" it when its EM gain >= 95% of full's, its general-loss
// increase is below full's, and its version is <= 15% of the model's bytes; and LoRA vs esft_token.
//
//   bench_finetune --methods-table [--tasks a,b] [--methods esft_gate,esft_token,auto,full,lora]
//                  [--train N] [--val N] [--test N] [--secret N] [--steps N] [--lr X] [--full-lr X]
//                  [--p-gate P] [--p-token P] [--max-slots N] [--lora-rank N] [--lora-alpha X]
//                  [--general-docs N] [--skill-n N] [--other-n N]
// Last line: methods_table tasks=<n> esft_gate_meets=<k> esft_token_meets=<k>
#pragma once

namespace tessera::bench {

int RunMethodsTable(int argc, char** argv);

}  // namespace tessera::bench
