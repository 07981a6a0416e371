#!/usr/bin/env python3
"""Per-token cost of expert parallelism (EP) for the MoE families Tessera serves.

Prints, for public model configs and a few EP layouts, what one token costs in all-to-all traffic and
in expert compute, and what tenant overlays cost per device. Standard library only; the numbers in
ops/design/expert-parallelism.md are this script's output (`python3 ops/design/ep_cost.py`).

Model of the traffic (DeepSpeed-MoE / Megatron-style EP, no expert replication):
  - E routed experts of a layer are spread evenly over G devices (E/G each); a token picks k distinct
    experts. Under balanced routing each k-subset is equally likely, so the chance that a device
    receives none of the token's experts is p0 = C(E - E/G, k) / C(E, k).
  - The token's hidden vector goes once to every *remote* device that holds one of its experts
    (dispatch; deduplicated per device), and each such device sends back one weighted partial sum
    (combine). Expected remote devices: (G - 1) * (1 - p0). Bytes per token per MoE layer:
    2 * remote * hidden * bytes_per_element (dispatch + combine; bf16 = 2 bytes both ways).
  - Expert compute per token per MoE layer: k experts * 2 FLOP * 3 matrices * hidden * moe_intermediate
    (SwiGLU: gate, up, down). Training adds the backward: 2x the FLOPs and the same all-to-all volume
    again (activation gradients travel the reverse way).
  - "FLOP per byte" = expert FLOPs / all-to-all bytes. Below the device's ridge point
    (peak FLOP/s / link bytes/s) the layer waits on the network unless the two overlap.
"""

from math import comb

# Public config.json values (Hugging Face model cards): hidden_size, moe_intermediate_size (or
# intermediate_size for Mixtral), num_hidden_layers minus dense leading layers, num_experts
# (n_routed_experts), num_experts_per_tok.
MODELS = [
    # name, hidden, expert_intermediate, moe_layers, experts, top_k
    ("Mixtral-8x7B", 4096, 14336, 32, 8, 2),
    ("Qwen3-30B-A3B", 2048, 768, 48, 128, 8),
    ("Qwen3-235B-A22B", 4096, 1536, 94, 128, 8),
    ("DeepSeek-V3", 7168, 2048, 58, 256, 8),  # 61 layers, first 3 dense; plus 1 shared expert
]

# H100 SXM: ~989 TFLOP/s dense bf16; NVLink 4 ~450 GB/s per direction per GPU; one 400 Gb/s NIC per GPU
# ~50 GB/s. Ridge points (FLOP per byte needed to hide the traffic at peak): ~2,200 and ~19,800.
PEAK_FLOPS = 989e12
LINKS = [("NVLink", 450e9), ("IB 400G", 50e9)]
BYTES_BF16 = 2


def remote_devices(experts, devices, top_k):
    per_device = experts // devices
    p_none = comb(experts - per_device, top_k) / comb(experts, top_k)
    return (devices - 1) * (1.0 - p_none)


def main():
    print("## Per token, per MoE layer, forward (bf16 both ways, balanced routing)\n")
    print("| model | expert params | expert bf16 MB | G devices | remote devices | all-to-all KB | "
          "expert MFLOP | FLOP/byte | all-to-all MB/token (all layers) | us/token NVLink | us/token IB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, hidden, inter, layers, experts, top_k in MODELS:
        params = 3 * hidden * inter
        flops = top_k * 2 * params
        for devices in (8, 16, 64):
            if devices > experts or experts % devices:
                continue
            remote = remote_devices(experts, devices, top_k)
            a2a = 2 * remote * hidden * BYTES_BF16
            per_token = a2a * layers
            print(f"| {name} | {params / 1e6:.1f}M | {params * BYTES_BF16 / 1e6:.1f} | {devices} | "
                  f"{remote:.2f} | {a2a / 1e3:.1f} | {flops / 1e6:.1f} | {flops / a2a:,.0f} | "
                  f"{per_token / 1e6:.2f} | {per_token / LINKS[0][1] * 1e6:.2f} | "
                  f"{per_token / LINKS[1][1] * 1e6:.2f} |")
    print(f"\nRidge points at {PEAK_FLOPS / 1e12:.0f} TFLOP/s: " +
          ", ".join(f"{n} {PEAK_FLOPS / bw:,.0f} FLOP/byte" for n, bw in LINKS))

    print("\n## Tenant overlays under EP (a slot lives on the device that owns its base expert)\n")
    print("| model | slot bf16 MB | tenants | slots/tenant | total GB | per device GB (G=8, even) | "
          "per device GB (G=8, all on one device) |")
    print("|---|---|---|---|---|---|---|")
    for name, hidden, inter, layers, experts, top_k in MODELS:
        slot = 3 * hidden * inter * BYTES_BF16
        for tenants, slots in ((100, 8), (1000, 8), (1000, 32)):
            total = tenants * slots * slot
            print(f"| {name} | {slot / 1e6:.1f} | {tenants} | {slots} | {total / 1e9:.1f} | "
                  f"{total / 8 / 1e9:.1f} | {total / 1e9:.1f} |")


if __name__ == "__main__":
    main()
