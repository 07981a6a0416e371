// Placeholder: filled in by the emulation coverage work (see tiled_attention_emulation_test.cc).
