// LoadChatTemplate: the chat template and special tokens of a Hugging Face checkpoint directory, found
// where transformers finds them.
//
//   - chat_template.jinja beside tokenizer_config.json takes precedence (transformers: "independent chat
//     template file(s) ... take priority over template entries in the tokenizer config");
//   - otherwise tokenizer_config.json's "chat_template": a string, or a list of {"name", "template"}
//     from which "default" is the template and "tool_use" (if present) the one used when tools are given
//     (as get_chat_template picks); a list without "default" is INVALID_ARGUMENT, as transformers
//     refuses it;
//   - special tokens (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token) from
//     tokenizer_config.json, each a string or an AddedToken object {"content": ...}; when the config has no
//     "added_tokens_decoder", special_tokens_map.json's entries override them (transformers 5's legacy
//     path). They become the template variables transformers passes.
// No template anywhere -> nullopt (the checkpoint has no chat format). Unreadable or malformed files,
// and templates that fail ChatTemplate::Create, are INVALID_ARGUMENT naming the file.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/chat/chat_template.h"

namespace tessera::chat {

struct CheckpointChatTemplate {
  std::shared_ptr<const ChatTemplate> chat_template;  // the default template
  std::shared_ptr<const ChatTemplate> tool_use;       // null unless a named "tool_use" template exists
  std::string source_file;                            // where the default template came from
  // bos_token/eos_token set when the checkpoint names them; extra holds the other special tokens.
  ChatRenderOptions defaults;

  // The template transformers would use: tool_use when tools are given and it exists.
  const ChatTemplate& ForTools(bool has_tools) const {
    return has_tools && tool_use ? *tool_use : *chat_template;
  }
};

absl::StatusOr<std::optional<CheckpointChatTemplate>> LoadChatTemplate(const std::string& checkpoint_dir);

}  // namespace tessera::chat
