#include "core/train/pretrain.h"

#include <atomic>
#include <chrono>
#include <filesystem>

#include "core/data/corpus.h"
#include "core/data/jsonl_dataset.h"
#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "core/model/model.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/train/model_trainable.h"
#include "core/util/status_macros.h"

namespace tessera::train {

PretrainOptions DefaultPretrainOptions() {
  PretrainOptions o;
  o.trainer.max_steps = 1200;
  o.trainer.batch_size = 32;
  o.trainer.seq_len = 96;
  o.trainer.learning_rate = 4e-3;
  o.trainer.warmup_steps = 60;
  o.trainer.min_lr_ratio = 0.1;
  o.trainer.weight_decay = 0.01;
  o.trainer.beta2 = 0.98;
  o.trainer.max_grad_norm = 1.0;
  o.trainer.eval_every = 250;
  o.trainer.eval_max_examples = 128;
  o.trainer.seed = 7;
  return o;
}

absl::Status SaveBackbone(const ModelConfig& config, ModelWeights& weights, Backend* backend,
                          const std::string& dir, const std::map<std::string, std::string>& metadata,
                          bool bf16) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError("cannot create " + dir + ": " + ec.message());
  RETURN_IF_ERROR(io::WriteFileAtomically(dir + "/config.json", config.ToJson()));
  std::vector<NamedParam> params = weights.Parameters(config);
  std::vector<std::vector<float>> f32(params.size());
  std::vector<std::vector<uint16_t>> b16(params.size());
  std::vector<io::HostTensor> tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    ASSIGN_OR_RETURN(f32[i], backend->ToHostF32(*params[i].tensor));
    if (bf16) {
      b16[i].resize(f32[i].size());
      for (size_t j = 0; j < f32[i].size(); ++j) b16[i][j] = F32ToBf16(f32[i][j]);
      tensors.push_back({params[i].name, DType::kBF16, params[i].tensor->shape(), b16[i].data()});
    } else {
      tensors.push_back({params[i].name, DType::kF32, params[i].tensor->shape(), f32[i].data()});
    }
  }
  return io::WriteSafetensorsFile(dir + "/model.safetensors", tensors, metadata);
}

absl::StatusOr<PretrainResult> Pretrain(const PretrainOptions& options, Backend* backend,
                                        const std::function<void(const TrainProgress&)>& on_progress) {
  ByteTokenizer tok;
  std::vector<data::TokenizedExample> train, val;
  for (const std::string& doc : data::GenerateGeneralCorpus(options.corpus_seed, options.num_docs)) {
    train.push_back(data::TokenizeText(doc, tok));
  }
  for (const std::string& doc : data::GenerateGeneralCorpus(options.corpus_seed + 1, 256)) {
    val.push_back(data::TokenizeText(doc, tok));
  }
  ASSIGN_OR_RETURN(ModelWeights weights,
                   ModelWeights::RandomInit(options.config, options.init_seed, backend));
  ASSIGN_OR_RETURN(auto model, Model::Create(options.config, weights, backend));
  ASSIGN_OR_RETURN(auto trainable, ModelTrainable::ForAllParameters(model.get()));
  ASSIGN_OR_RETURN(auto trainer, Trainer::Create(trainable.get(), std::move(train), std::move(val),
                                                 options.trainer));
  std::atomic<bool> out_of_time{false};
  const auto start = std::chrono::steady_clock::now();
  RunControls controls;
  controls.cancel = &out_of_time;
  controls.on_progress = [&](const TrainProgress& p) {
    if (on_progress) on_progress(p);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options.max_seconds > 0 && elapsed >= options.max_seconds) out_of_time = true;
  };
  PretrainResult result;
  auto r = trainer->Run(controls);
  if (!r.ok() && !absl::IsCancelled(r.status())) return r.status();
  if (r.ok()) {
    result.train = *r;
  } else {
    // Out of time: report what was done, with a final validation loss.
    result.train.steps = trainer->step();
    ASSIGN_OR_RETURN(result.train.final_val_loss, trainer->ValidationLoss());
    if (!trainer->losses().empty()) result.train.final_train_loss = trainer->losses().back();
  }
  result.losses = trainer->losses();
  result.weights = model->weights();
  return result;
}

}  // namespace tessera::train
