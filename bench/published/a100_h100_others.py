# Published GPU training-throughput rows (task A: A100/H100/H200...). Blind transcription; see rows_a.md.
# Llama-style blocks are expressed as a GPT-2 width W = round(sqrt(block_params/12)),
# block_params = 2*H*H + 2*H*(G*d) + 3*H*F.
import math


def _w(H, G, d, F):
    return round(math.sqrt((2*H*H + 2*H*(G*d) + 3*H*F) / 12))

# Llama 3 / 3.1 8B: L=32, H=4096, F=14336, 8 kv heads, head dim 128, vocab 128256, untied.
_LLAMA3_8B_W = _w(4096, 8, 128, 14336)   # = 4263

ROWS = []

# ---------------- torchtitan (PyTorch), docs/performance.md ----------------
_TT_A100_SRC = ("https://github.com/pytorch/torchtitan/blob/395a526276eed4000c038a37d9b4859d0813af7c/docs/performance.md "
                "(commit 395a526, 2024-04-18; same table kept through 2024-12). Quote: 'Below are the WPS (word per second, or more "
                "accurately, token per second) and MFU (model FLOPS utilization) results which torchtitan achieves on Llama 3 models "
                "with FSDP2 on 64 A100 (80GB) GPUs.' | '8B | 1 | selective layer | 2904 | 56.8% |' | '8B | 1 | selective op | 2973 | 58.2% |' "
                "| 'We use local batch size 1 (global batch size = local batch size 1 * number of FSDP ranks 64 = 64)'. "
                "Config train_configs/llama3_8b.toml at that commit: 'NOTE: this toml config is a preset for 64 A100 GPUs', batch_size = 1, "
                "seq_len = 8192, tensor_parallel_degree = 1, pipeline_parallel_degree = 1, compile = false.")
_TT_A100_ASM = ("WPS is per GPU (torchtitan logs per-rank wps; consistent with the stated MFU). Llama-3-8B block converted: "
                "W = round(sqrt((2*4096^2 + 2*4096*1024 + 3*4096*14336)/12)) = 4263. FSDP2 full shard (stage 3), bf16 params / fp32 reduce "
                "(torchtitan default mixed precision, assumed). 'selective' AC = partial recomputation (layer: every 2nd layer per default "
                "selective_ac_option; op: op-level SAC policy); marked checkpointing=True. A100 80GB. Steady-state, no compile.")
ROWS += [
    dict(name="torchtitan Llama3-8B FSDP2 64xA100 selective-layer AC", gpu="A100", n_gpus=64, n_layer=32, n_embd=_LLAMA3_8B_W,
         seq=8192, micro=1, accum=1, stage=3, tokens_per_s_per_gpu=float(2904), whole_run=False, untied=True, vocab=128256,
         checkpointing=True, precision="bf16", trainer="torchtitan (FSDP2)", source=_TT_A100_SRC,
         assumptions=_TT_A100_ASM + " Layer-SAC frequency not stated in table (assumed default 2)."),
    dict(name="torchtitan Llama3-8B FSDP2 64xA100 selective-op AC", gpu="A100", n_gpus=64, n_layer=32, n_embd=_LLAMA3_8B_W,
         seq=8192, micro=1, accum=1, stage=3, tokens_per_s_per_gpu=float(2973), whole_run=False, untied=True, vocab=128256,
         checkpointing=True, precision="bf16", trainer="torchtitan (FSDP2)", source=_TT_A100_SRC, assumptions=_TT_A100_ASM),
]

_TT_H100_SRC = ("https://github.com/pytorch/torchtitan/blob/eaea6f6a2fa940f03a10906be1df3489cf30af85/docs/performance.md "
                "(also benchmarks/llama3_h100_202412_torchtitan.md; torchtitan commit 9dec370, 2024-12-26). Quotes: 'Each H100 GPU is "
                "equipped with 96GB HBM2e with 2.4 TB/sec peak memory bandwidth.' 'We used the default 500W power limit' "
                "'throughput numbers (TPS/GPU) are calculated and logged every 10 iterations, and always read at the (arbitrarily "
                "determined) 90th iteration.' '**Table 1** 1D Parallelism (FSDP). Llama 3.1 8B model. 8 GPUs. Local batch size 2, global "
                "batch size 16. Selective activation checkpointing.' '| FSDP | 5,762 | 82.4 |' '| FSDP + torch.compile | 6,667 | 77.0 |' "
                "'**Table 3** 1D Parallelism (FSDP). Llama 3.1 8B model. 128 GPUs. Local batch size 2, global batch size 256. Selective "
                "activation checkpointing.' '| FSDP | 5,605 | 67.0 |' '| FSDP + torch.compile | 6,514 | 62.0 |'. Config at 9dec370 "
                "train_configs/llama3_8b.toml: seq_len = 8192, mode = 'selective', selective_ac_option = 'op'.")
_TT_H100_ASM = ("H100 SXM with 96GB HBM2e at 500 W power limit (Meta Grand Teton) -- NOT a standard 80GB/700W H100 SXM; source says "
                "peak is 'between SXM and NVL'. Llama-3.1-8B block converted to W=4263 (see above). seq 8192 from the config (not restated "
                "in the table). FSDP full shard (stage 3), bf16 mixed precision (Float8 rows excluded). Selective op AC -> checkpointing=True "
                "(partial recompute).")
for _n, _tps, _tag in [(8, 5762, "FSDP"), (8, 6667, "FSDP+compile"), (128, 5605, "FSDP"), (128, 6514, "FSDP+compile")]:
    ROWS.append(dict(name=f"torchtitan Llama3.1-8B {_tag} {_n}xH100(96GB,500W) selective-op AC", gpu="H100", n_gpus=_n,
                     n_layer=32, n_embd=_LLAMA3_8B_W, seq=8192, micro=2, accum=1, stage=3,
                     tokens_per_s_per_gpu=float(_tps), whole_run=False, untied=True, vocab=128256, checkpointing=True,
                     precision="bf16", trainer="torchtitan (FSDP2)" + (" + torch.compile" if "compile" in _tag else ""),
                     source=_TT_H100_SRC, assumptions=_TT_H100_ASM))

# ---------------- FlashAttention repo, training/README.md (GPT3 on The Pile, 8 x A100 80GB) ----------------
_FA_SRC = ("https://github.com/Dao-AILab/flash-attention/blob/4a6eaa9f27df6fff7ffb2c24e894938a687dd870/training/README.md "
           "(commit 4a6eaa9f, 2022-11-29; unchanged at 0b037c2d). Quotes: 'We measure the wallclock training speed on one node with "
           "8 x A100 80GB SXM4 80GB (400W) with NVLink.' 'We include here more details on the training speed with FlashAttention on "
           "8 x A100 80GB.' '| GPT3-125M | 0.5M | 1310k | 0.21 |' '| GPT3-355M | 0.5M | 503k | 0.55 |' '| GPT3-760M | 0.5M | 245k | 1.13 |' "
           "'| GPT3-1.3B | 1M | 169k | 1.64 |' '| GPT3-2.7B | 1M | 85k | 3.27 |' (columns: Batch size (tokens), Through put (tokens/sec), "
           "Hours / 1B tokens). 'For the GPT3-2.7B model, we set head dimension to 128 (instead of 80)'. Configs "
           "training/configs/experiment/pile/{base,gpt3s-flash,gpt3m-flash,gpt3l-flash,gpt3xl-flash,gpt3-2.7B-flash-hdim128}.yaml at "
           "4a6eaa9f: max_length 2048, precision bf16, global_batch_size 256 (512 for xl/2.7B), devices 8; per-GPU batch_size rule by "
           "gpu_mem; gpt3l/xl/2.7B use DDPStrategyZero1 + torch ZeroRedundancyOptimizer (adamw-zero); 125M/355M plain DDP (adamw-apex).")
_FA_ASM = ("Throughput is the 8-GPU total -> divided by 8. micro from the config's gpu_mem rule for 80GB (nvidia-smi memory.total ~81920 MiB "
           "-> gpu_mem 82, i.e. the '>=80' branch; assumed); accum = global_batch/(8*micro). GPT-2 architecture (learned pos emb "
           "assumed, non-rotary configs), vocab 50257 padded to multiple of 8 = 50264, tied embeddings (flash_attn GPTLMHeadModel "
           "tie_word_embeddings default True). No activation checkpointing ('we don't need any activation checkpointing'). Fused "
           "kernels (FlashAttention v1, fused MLP, fused dropout-add-LN, fused xentropy) -- trainer is PyTorch Lightning + flash_attn. "
           "A100 SXM4 80GB at 400W.")
for _nm, _L, _H, _mic, _gb, _st, _tot in [
        ("GPT3-125M", 12, 768, 32, 256, 0, 1310e3),
        ("GPT3-355M", 24, 1024, 32, 256, 0, 503e3),
        ("GPT3-760M", 24, 1536, 16, 256, 1, 245e3),
        ("GPT3-1.3B", 24, 2048, 8, 512, 1, 169e3),
        ("GPT3-2.7B (hdim128)", 32, 2560, 4, 512, 1, 85e3)]:
    ROWS.append(dict(name=f"flash-attention training README {_nm} 8xA100-80GB", gpu="A100", n_gpus=8, n_layer=_L, n_embd=_H,
                     seq=2048, micro=_mic, accum=_gb // (8 * _mic), stage=_st, tokens_per_s_per_gpu=_tot / 8, whole_run=False,
                     untied=False, vocab=50264, checkpointing=False, precision="bf16",
                     trainer="flash-attention training (PyTorch Lightning DDP" + (" + torch ZeroRedundancyOptimizer)" if _st else ")"),
                     source=_FA_SRC, assumptions=_FA_ASM))

# ---------------- modded-nanogpt (KellerJordan) record logs, 8 x H100 80GB HBM3 ----------------
# Logs print the full training script + nvidia-smi + 'step:N/N ... train_time:...ms step_avg:...ms'. step_avg excludes
# the first warm-up steps and validation time (timer paused during val), so it is a steady-state per-step time.
_MN = "https://github.com/KellerJordan/modded-nanogpt/blob/f411b3d3/records/track_1_short/"
_MN_ASM_BASE = ("torch.compile, bf16 autocast, DDP (torch DistributedDataParallel, no sharding), no activation checkpointing. "
                "n_gpus = 8 from 'batch_size : int = 8*64 # ... across all devices' and the speedrun rules (8xH100); nvidia-smi "
                "in the log shows 'NVIDIA H100 80GB HBM3'. tokens/s/GPU = device_batch_size*1024*accum/(step_avg/1000) with "
                "accum = batch_size/(8*device_batch_size). Optimizer: ")
def _mn_row(name, path, L, H, vocab, untied, micro, accum, step_ms, quote, opt_note, extra=""):
    return dict(name=name, gpu="H100", n_gpus=8, n_layer=L, n_embd=H, seq=1024, micro=micro, accum=accum, stage=0,
                tokens_per_s_per_gpu=micro * 1024 * accum / (step_ms / 1000), whole_run=False, untied=untied, vocab=vocab,
                checkpointing=False, precision="bf16", trainer="modded-nanogpt (PyTorch DDP + torch.compile)",
                source=_MN + path + " Quote: " + quote, assumptions=_MN_ASM_BASE + opt_note + " " + extra)

_MUON1 = "Muon (Newton-Schulz orthogonalization computed redundantly on every rank) for hidden matrices + AdamW for embed/head -- optimizer overhead not negligible."
_MUON2 = "Muon with Newton-Schulz work distributed across ranks ('Distributed the overhead of Muon') + Adam for embed/head."
_ARCH0 = "GPT-2 small (12L, 768, 12 heads, MLP 4x GELU) with rotary instead of learned positions, RMSNorm, no biases; tied wte/lm_head."
_ARCH1 = "GPT-2-small-shaped (12L, 768, 6 heads of dim 128, MLP 4x ReLU^2), rotary, QK-norm, no biases; vocab padded 50257->50304."
ROWS += [
    _mn_row("modded-nanogpt 2024-10-10 Muon record (124M) 8xH100", "2024-10-10_Muon/eb5659d0-fb6a-49e5-a311-f1f89412f726.txt",
            12, 768, 50257, False, 64, 1, 216.33,
            "'batch_size : int = 8*64' 'device_batch_size : int = 64' 'sequence_length : int = 1024' "
            "'step:6200/6200 val_loss:3.2785 train_time:1339067ms step_avg:216.33ms' (record #4, 22.3 minutes, 10/11/24)",
            _MUON1, _ARCH0),
    _mn_row("modded-nanogpt 2024-10-14 ModernArch record (124M) 8xH100", "2024-10-14_ModernArch/dabaaddd-237c-4ec9-939d-6608a9ed5e27.txt",
            12, 768, 50304, False, 64, 1, 178.89,
            "'device_batch_size : int = 64' 'num_vocab = 50304' 'GPTConfig(vocab_size=num_vocab, n_layer=12, n_head=6, n_embd=768)' "
            "'step:5100/5100 val_loss:3.2741 train_time:910546ms step_avg:178.89ms' (record #5, 15.2 minutes)",
            _MUON1, _ARCH1 + " Tied (wte.weight = lm_head.weight)."),
    _mn_row("modded-nanogpt 2024-10-17 DistributedMuon record (124M) 8xH100", "2024-10-17_DistributedMuon/22d24867-eb5a-4fcc-ae2c-263d0277dfd1.txt",
            12, 768, 50304, False, 64, 1, 153.84,
            "'device_batch_size : int = 64' 'step:5100/5100 val_loss:3.2747 train_time:783059ms step_avg:153.84ms' (record #6, 13.1 minutes; pytorch 2.4.1)",
            _MUON2, _ARCH1 + " Tied."),
    _mn_row("modded-nanogpt 2024-10-18 PyTorch25 record (124M) 8xH100", "2024-10-18_PyTorch25/d4bfb25f-688d-4da5-8743-33926fad4842.txt",
            12, 768, 50304, False, 64, 1, 141.82,
            "'Running pytorch 2.5.0+cu124' 'step:5100/5100 val_loss:3.2755 train_time:721882ms step_avg:141.82ms' (record #7, 12.0 minutes)",
            _MUON2, _ARCH1 + " Tied."),
    _mn_row("modded-nanogpt 2024-10-29 optimizer comparison: AdamW (124M) 8xH100", "2024-10-29_Optimizers/95a9fd44-7c13-49c7-b324-3e7d9e23a499.txt",
            12, 768, 50304, False, 64, 1, 138.61,
            "README: 'They are compared using the 10/18/24 NanoGPT speedrunning record.' '[Adam](95a9fd44-7c13-49c7-b324-3e7d9e23a499.txt)'; "
            "log: 'step:5100/5100 val_loss:3.3406 train_time:705525ms step_avg:138.61ms'",
            "plain AdamW (fused) for all params -- cleanest row.", _ARCH1 + " Tied. pytorch 2.5.0."),
    _mn_row("modded-nanogpt 2024-10-29 optimizer comparison: Muon (124M) 8xH100", "2024-10-29_Optimizers/8d6193f4-27fc-4e68-899f-af70019a4d54.txt",
            12, 768, 50304, False, 64, 1, 142.01,
            "README: '[Muon](8d6193f4-27fc-4e68-899f-af70019a4d54.txt)'; log: 'step:5100/5100 val_loss:3.2760 train_time:722818ms step_avg:142.01ms'",
            _MUON2, _ARCH1 + " Tied. pytorch 2.5.0."),
    _mn_row("modded-nanogpt 2024-11-03 UntieEmbed record (124M) 8xH100", "2024-11-03_UntieEmbed/d6b50d71-f419-4d26-bb39-a60d55ae7a04.txt",
            12, 768, 50304, True, 64, 1, 141.87,
            "'num_iterations : int = 4578' 'Running pytorch 2.5.1+cu124' 'step:4578/4578 val_loss:3.2762 train_time:648063ms step_avg:141.87ms' (record #8, 10.8 minutes)",
            _MUON2, _ARCH1 + " UNTIED lm_head (separate Adam optimizer2 for lm_head)."),
    _mn_row("modded-nanogpt 2024-11-06 ShortcutsTweaks record (124M) 8xH100", "2024-11-06_ShortcutsTweaks/dd7304a6-cc43-4d5e-adb8-c070111464a1.txt",
            12, 768, 50304, True, 64, 1, 154.78,
            "'num_iterations : int = 3200' 'step:3200/3200 val_loss:3.2791 train_time:493742ms step_avg:154.78ms' (record #9, 8.2 minutes)",
            _MUON2, _ARCH1 + " Untied; adds value-residual and embedding skip connections + logit softcap (small extra elementwise work)."),
    _mn_row("modded-nanogpt 2024-11-08 CastBf16 record (124M) 8xH100", "2024-11-08_CastBf16/a833bed8-2fa8-4cfe-af05-58c1cc48bc30.txt",
            12, 768, 50304, True, 64, 1, 144.68,
            "'num_iterations : int = 3242' 'step:3242/3242 val_loss:3.2781 train_time:467607ms step_avg:144.68ms' (record #10, 7.8 minutes, 'Bfloat16 activations')",
            _MUON2, _ARCH1 + " Untied; as 11-06 plus bf16-cast activations/embeddings (no autocast line in this script)."),
    _mn_row("modded-nanogpt 2024-11-10 UNetDoubleLr record (124M) 8xH100", "2024-11-10_UNetDoubleLr/c87bb826-797b-4f37-98c7-d3a5dad2de74.txt",
            12, 768, 50304, True, 64, 1, 145.01,
            "'num_iterations : int = 3000' 'step:3000/3000 val_loss:3.2753 train_time:433570ms step_avg:145.01ms' (record #11, 7.2 minutes)",
            _MUON2, _ARCH1 + " Untied; U-net pattern skip connections."),
    _mn_row("modded-nanogpt 2024-10-20 ScaleUp1B (52L x 1536, ~1.5B) micro10 8xH100", "2024-10-20_ScaleUp1B/87bd51fd-6203-4c88-b3aa-8a849a6a83ca.txt",
            52, 1536, 50304, False, 10, 6, 1703.57,
            "'batch_size : int = 8*60' 'device_batch_size : int = 10' 'GPTConfig(vocab_size=num_vocab, n_layer=52, n_head=12, n_embd=1536)' "
            "'step:20344/20344 val_loss:2.7737 train_time:34640332ms step_avg:1703.57ms'",
            _MUON2 + " (script is the 10/18 DistributedMuon script scaled up: world_size/rank split in Muon.step)", _ARCH1.replace("12L, 768, 6 heads of dim 128", "52L, 1536, 12 heads of dim 128") + " Tied. pytorch 2.4.1."),
    _mn_row("modded-nanogpt 2024-10-20 ScaleUp1B (52L x 1536, ~1.5B) micro12 8xH100", "2024-10-20_ScaleUp1B/ad8d7ae5-7b2d-4ee9-bc52-f912e9174d7a.txt",
            52, 1536, 50304, False, 12, 5, 1719.17,
            "'batch_size : int = 8*60' 'device_batch_size : int = 12' 'n_layer=52, n_head=12, n_embd=1536' "
            "'step:20344/20344 val_loss:2.7297 train_time:34957570ms step_avg:1719.17ms'",
            _MUON2 + " (script is the 10/18 DistributedMuon script scaled up: world_size/rank split in Muon.step)", "52L x 1536 GPT-2-style (ReLU^2, rotary, QK-norm). Tied. pytorch 2.4.1."),
]

# whole run: record #2 (AdamW + rotary), 31.4 minutes for 5B tokens
ROWS.append(dict(
    name="modded-nanogpt record #2 (Tuned LR & rotary, AdamW, 124M) whole run 8xH100", gpu="H100", n_gpus=8, n_layer=12, n_embd=768,
    seq=1024, micro=64, accum=1, stage=0, tokens_per_s_per_gpu=9536 * 524288 / (31.4 * 60) / 8, whole_run=True, untied=False,
    vocab=50257, checkpointing=False, precision="bf16", trainer="modded-nanogpt / tuned llm.c train_gpt2.py (PyTorch DDP + torch.compile)",
    source=("https://github.com/KellerJordan/modded-nanogpt README.md (HEAD f411b3d3): '2 | 31.4 minutes | [Tuned learning rate & rotary "
            "embeddings](...) | 06/06/24 | [log](records/track_1_short/2024-06-06_AdamW/...)'; README at commit 09a49d4a (2024-06-06): "
            "'This will produce a 124M-parameter transformer trained on 5B tokens'; run.sh at 09a49d4a: '--batch_size 64 --sequence_length 1024 "
            "--total_batch_size 524288 ... --num_iterations 9536 --val_loss_every 128'."),
    assumptions=("Whole run: 9536*524288 = 5.0B tokens in 31.4 min on 8 GPUs (8xH100 per speedrun rules; GPU model not printed in that "
                 "log). The 31.4 min may include periodic validation (every 128 steps) -- not stated; assumed it is the training wall time. "
                 "Plain AdamW, tied embeddings, rotary, RMSNorm, bf16 autocast, DDP.")))

# ---------------- nanochat (karpathy) time-to-GPT-2 leaderboard, Run 1 (bf16) ----------------
ROWS.append(dict(
    name="nanochat d24 leaderboard Run 1 (bf16) whole pretraining run 8xH100", gpu="H100", n_gpus=8, n_layer=24, n_embd=1536,
    seq=2048, micro=16, accum=2, stage=0, tokens_per_s_per_gpu=16704 * 524288 / 10949.46713 / 8, whole_run=True, untied=True,
    vocab=32768, checkpointing=False, precision="bf16", trainer="nanochat (PyTorch DDP-style + Muon/AdamW, torch.compile)",
    source=("https://github.com/karpathy/nanochat/blob/92d63d4/dev/LEADERBOARD.md '## Run 1' 'Achieved Jan 29 2026 on commit `348fbb3`.' "
            "launch: 'torchrun --standalone --nproc_per_node=8 -m scripts.base_train -- --depth=24 ... --device-batch-size=16 ... "
            "--target-param-data-ratio=12' result: 'wandb:                 step 16704' 'wandb:  total_training_time 10949.46713'; "
            "'report the `total_training_time` ... which is the time of the training iterations alone, excluding all the evaluations and "
            "logging, in seconds'. README: '| 1 | 3.04 | 0.74833 | 0.2585 | d24 baseline, slightly overtrained | Jan 29 2026 | 348fbb3 |'. "
            "scripts/base_train.py at 348fbb3: '--aspect-ratio ... default=64' '--head-dim ... default=128' '--max-seq-len ... default=2048' "
            "'--total-batch-size ... default=524288' '--window-pattern ... default=\"SSSL\"'; nanochat/gpt.py: 'untied weights for token "
            "embedding and lm_head', 'relu^2 activation in MLP', 'vocab_size: int = 32768'."),
    assumptions=("Whole run = 16704 steps x 524,288 tokens (default total batch) in 10949.5 s on 8xH100 (80GB assumed). n_embd = 24*64 = 1536, "
                 "12 heads of 128, MHA (n_kv_head = n_head), MLP 4x relu^2 -> GPT-2-shaped block. accum = 524288/(16*2048*8) = 2. "
                 "DEVIATIONS: sliding-window attention pattern 'SSSL' (3 of 4 layers use half-context window 1024), value embeddings "
                 "with gates on alternating layers (extra embedding tables), rotary, QK-norm, no biases; Muon optimizer for matrices. "
                 "vocab 32768 (tokenizer 2^15, padded to multiple of 64 = same). No activation checkpointing (assumed; none in code path).")))

# ---------------- OLMo-core README throughput table (H100, tokens/s/device) ----------------
_OC_SRC = ("https://github.com/allenai/OLMo-core/blob/e27ba74550f12a685b95aded46c88f845a7e2d6d/README.md (commit e27ba74, 2024-11-05 "
           "'Update throughput numbers'; table unchanged until 41f8ddc9f, 2025-03-12). Quotes: 'Throughput numbers from these scripts with "
           "various different configuration settings are reported below, measured on a cluster with NVIDIA H100 GPUs.' "
           "'| **1B**  | OLMo-1124 | 4096 | BF16 | 55,000 TPS | `OLMo-1B.py` | |' '| **7B**  | OLMo-1124 | 4096 | BF16 | 10,000 TPS | "
           "`OLMo-7B.py` | |' '| **8B**  | Llama | 4096 | BF16 | 9,500 TPS | `Llama-8B.py` | |' '[^1]: Throughput reported in tokens per "
           "second per device.' Scripts src/scripts/train/{OLMo-1B,OLMo-7B,Llama-8B}.py at e27ba74: compile=True, "
           "DataParallelType.fsdp, param_dtype=bfloat16, reduce_dtype=float32, rank_microbatch_size = 8*4096 (1B) / 2*4096 (7B, 8B), "
           "global_batch_size=1024 * 4096; tokenizer TokenizerConfig.dolma2() (vocab 100278, padded_vocab_size multiple 128 -> 100352).")
_OC_ASM = ("n_gpus NOT stated: assumed 8 (src/olmo_core/internal/experiment.py launch defaults num_nodes=1, num_gpus=8; multi-node would "
           "switch to HSDP). accum = 1024/(micro*8) under that assumption. FSDP full shard -> stage 3. No activation checkpointing "
           "configured in the scripts (assumed none). Untied output layer (separate w_out). Numbers are rounded ('55,000'). ")
ROWS += [
    dict(name="OLMo-core OLMo-1B (OLMo-1124 arch) BF16 H100", gpu="H100", n_gpus=8, n_layer=18, n_embd=_w(2048, 16, 128, 5632),
         seq=4096, micro=8, accum=1024 // (8 * 8), stage=3, tokens_per_s_per_gpu=55000.0, whole_run=False, untied=True, vocab=100352,
         checkpointing=False, precision="bf16", trainer="OLMo-core (FSDP2 + torch.compile)", source=_OC_SRC,
         assumptions=_OC_ASM + "olmo_1B = llama2_1B: d_model 2048, 18 layers, 16 heads (MHA, head 128), FFN int(8*2048/3)=5461 -> "
                     "multiple of 256 = 5632, SwiGLU; W = round(sqrt((2*2048^2 + 2*2048*2048 + 3*2048*5632)/12)) = 2069. QK-norm, reordered norm."),
    dict(name="OLMo-core OLMo-7B (OLMo-1124 arch) BF16 H100", gpu="H100", n_gpus=8, n_layer=32, n_embd=_w(4096, 32, 128, 11008),
         seq=4096, micro=2, accum=1024 // (2 * 8), stage=3, tokens_per_s_per_gpu=10000.0, whole_run=False, untied=True, vocab=100352,
         checkpointing=False, precision="bf16", trainer="OLMo-core (FSDP2 + torch.compile)", source=_OC_SRC,
         assumptions=_OC_ASM + "olmo_7B = llama2_7B: d_model 4096, 32 layers, 32 heads MHA, FFN int(8*4096/3)=10922 -> 11008, SwiGLU; "
                     "W = round(sqrt((2*4096^2 + 2*4096*4096 + 3*4096*11008)/12)) = 4107."),
    dict(name="OLMo-core Llama3-8B arch BF16 H100", gpu="H100", n_gpus=8, n_layer=32, n_embd=_LLAMA3_8B_W,
         seq=4096, micro=2, accum=1024 // (2 * 8), stage=3, tokens_per_s_per_gpu=9500.0, whole_run=False, untied=True, vocab=100352,
         checkpointing=False, precision="bf16", trainer="OLMo-core (FSDP2 + torch.compile)", source=_OC_SRC,
         assumptions=_OC_ASM + "llama3_8B: d_model 4096, 32 layers, 32 heads, 8 kv heads, FFN int(1.3*int(8*4096/3)) -> multiple of 1024 "
                     "= 14336 -> W = 4263. Vocab is the dolma2 tokenizer (100352 padded), NOT Llama-3's 128256 (script passes "
                     "common.tokenizer.padded_vocab_size())."),
]

# ---------------- IBM fms-fsdp README (Llama2-7B architecture, FSDP/HSDP) ----------------
_LLAMA2_7B_W = _w(4096, 32, 128, 11008)   # = 4107 (MHA: 32 kv heads x 128)
_FMS = "https://github.com/foundation-model-stack/fms-fsdp/blob/"
_FMS_ASM = ("Llama2-7B: 32 layers, d_model 4096, 32 heads MHA, SwiGLU FFN 11008 -> W = round(sqrt((2*4096^2 + 2*4096*4096 + "
            "3*4096*11008)/12)) = 4107; vocab 32000, untied. seq 4096 (fms_fsdp/config/training.py 'seq_length: int = 4096'). HSDP = "
            "full shard within each 8-GPU node, replicate across nodes -> stage 3 (intra-node). bf16 mixed precision "
            "('mixed_precision: bool = True'), SDPA flash attention v2. 'Batch Size' 2 is per GPU (docs: 'batch_size: batch size per gpu'); "
            "accum 1 assumed (global 128*2*4096 = 1M tokens matches docs/train_details.md 'per GPU batch size of 2 (effective batch size "
            "of 1M tokens/batch)'; for 96 H100 accum also assumed 1).")
ROWS += [
    dict(name="fms-fsdp Llama2-7B HSDP no-AC 128xA100-80G (no compile)", gpu="A100", n_gpus=128, n_layer=32, n_embd=_LLAMA2_7B_W,
         seq=4096, micro=2, accum=1, stage=3, tokens_per_s_per_gpu=3700.0, whole_run=False, untied=True, vocab=32000,
         checkpointing=False, precision="bf16", trainer="fms-fsdp (PyTorch FSDP, HSDP)",
         source=(_FMS + "5e522b4/README.md (2024-03-13). Quote: 'share the throughput obtained on 128 A100 GPUs as well as 96 H100 GPUs, "
                 "we use the exact same scripts and configurations for these GPUs.' '| 7b | HSDP | No AC | 2 | 3700 | 7500 |' (columns "
                 "'Training Throughput tokens/sec/GPU A100 80G 128 GPUs with 400Gbps' / 'H100 96 GPUs with 800 Gbps'). Earlier README "
                 "versions (3d28d72 .. 6dc80d2, 2024-02-21..28) gave '| 7b | HSDP | False | 2 | 3760 token/gpu/sec |' for the same config "
                 "(and cf6e42c gave 3650). scripts/train.sh: '--sharding_strategy=hsdp' '--batch_size=2' "
                 "'--fsdp_activation_checkpointing=False' '--use_torch_compile=False'."),
         assumptions=_FMS_ASM + " Value 3700 taken from the latest no-compile README; earlier revisions 3760/3650."),
    dict(name="fms-fsdp Llama2-7B HSDP no-AC 96xH100-80G (no compile)", gpu="H100", n_gpus=96, n_layer=32, n_embd=_LLAMA2_7B_W,
         seq=4096, micro=2, accum=1, stage=3, tokens_per_s_per_gpu=7500.0, whole_run=False, untied=True, vocab=32000,
         checkpointing=False, precision="bf16", trainer="fms-fsdp (PyTorch FSDP, HSDP)",
         source=(_FMS + "5e522b4/README.md (2024-03-13; same H100 value since 5805ace, 2024-02-26). Quote: '| 7b | HSDP | No AC | 2 | 3700 | "
                 "7500 |' (H100 column: 'Training throughput tokens/sec/GPU H100 96 GPUs with 800 Gbps'); MFU table header 'MFU (H100 80G)'."),
         assumptions=_FMS_ASM + " H100 80GB SXM assumed (MFU computed vs 989 TFLOPs)."),
    dict(name="fms-fsdp Llama2-7B HSDP no-AC 128xA100-80G + torch.compile", gpu="A100", n_gpus=128, n_layer=32, n_embd=_LLAMA2_7B_W,
         seq=4096, micro=2, accum=1, stage=3, tokens_per_s_per_gpu=4550.0, whole_run=False, untied=True, vocab=32000,
         checkpointing=False, precision="bf16", trainer="fms-fsdp (PyTorch FSDP, HSDP) + torch.compile",
         source=(_FMS + "ed74fd5/README.md (2024-05-09 'update numbers with compile'; still in HEAD 5a296af). Quote: '**_numbers are updated "
                 "with `torch.compile`, as our fms models are fully compatible with torch compile_**' '| 7b | HSDP | Y | No AC | 2 | 4550 | 9600 |'"),
         assumptions=_FMS_ASM),
    dict(name="fms-fsdp Llama2-7B HSDP no-AC 96xH100-80G + torch.compile", gpu="H100", n_gpus=96, n_layer=32, n_embd=_LLAMA2_7B_W,
         seq=4096, micro=2, accum=1, stage=3, tokens_per_s_per_gpu=9600.0, whole_run=False, untied=True, vocab=32000,
         checkpointing=False, precision="bf16", trainer="fms-fsdp (PyTorch FSDP, HSDP) + torch.compile",
         source=(_FMS + "ed74fd5/README.md (2024-05-09). Quote: '| 7b | HSDP | Y | No AC | 2 | 4550 | 9600 |' (H100 96 GPUs with 800 Gbps)."),
         assumptions=_FMS_ASM),
    dict(name="fms-fsdp Llama2-7B replica whole run 2.2T tokens 128xA100", gpu="A100", n_gpus=128, n_layer=32, n_embd=_LLAMA2_7B_W,
         seq=4096, micro=2, accum=1, stage=3, tokens_per_s_per_gpu=2.2e12 / (162e3 * 3600), whole_run=True, untied=True, vocab=32000,
         checkpointing=True, precision="bf16", trainer="fms-fsdp (PyTorch FSDP, HSDP)",
         source=(_FMS + "0d319983c4b3b7f7b3b5e2c5e7f746746b6f73a9/README.md. Quote: 'This model was trained to 2.2T tokens with a 4k "
                 "context length on 128 A100 GPUs for a total of 162k GPU hours, achieving an efficiency of 3500 tokens/sec/GPU (~38B "
                 "tokens/day)' '... combining multiple techniques - SDPA Flash v2 implementation, FSDP with overlap in computation and "
                 "communication, and selective activation checkpointing.' docs/train_details.md: 'weights and optimizer state sharded "
                 "within a node and data parallel across nodes, per GPU batch size of 2 (effective batch size of 1M tokens/batch)'."),
         assumptions=_FMS_ASM + " Whole run: 2.2e12 tokens / (162,000 GPU-h * 3600) = 3772 tok/s/GPU, vs the stated '3500 tokens/sec/GPU' "
                     "(inconsistent by ~8%; GPU-hours may exclude restarts, and the 1.5T-1.7T segment was retrained per train_details.md). "
                     "Selective activation checkpointing (fraction not stated) -> checkpointing=True."),
]

# ---------------- Jonathon Schwartz blog "Training GPT2 from 650 to 3 million tokens per second" (2025-07-13) ----------------
_JJ = ("https://github.com/Jjschwartz/jjschwartz.github.io/blob/30c7a5586b8d7e1571f15f588bd7d837d406b17e/content/blog/2025-07-13-scaling-gpt2.md "
       "(published as https://jjschwartz.github.io/blog/scaling-gpt2.html). ")
_JJ_ASM = ("GPT-2 small per the post's spec table ('| GPT-2 Small | 124M | 12 | 768 | 12 | 3072 | 1024 | 50,257 |'); implementation "
           "'heavily based on the python implementation in llm.c' -> tied embeddings and learned positions assumed. H100 80GB "
           "('H100s which have 80GB of memory'). Plain PyTorch, single process or DDP; no activation checkpointing mentioned (assumed none). ")
_jj_ladder = [  # (setup, precision, micro, tps, quote)
    ("H100 baseline fp32 batch 1", "fp32", 1, 27026, "'| Hardware: CUDA on H100 | 27026 | 41.90 |' ('Batch size is the same as before: 1 sequence of 1024 tokens')"),
    ("+bf16 autocast batch 1", "bf16", 1, 42871, "'| Software: bfloat16 | 42871 | 66.47 |'"),
    ("+flash attention batch 1", "bf16", 1, 48154, "'| Software: flash attention | 48154 | 74.66 |'"),
    ("+torch.compile batch 1", "bf16", 1, 55271, "'| Software: torch compile | 55271 | 85.69 |'"),
    ("+fused AdamW batch 1", "bf16", 1, 78750, "'| Software: fused adamw | 78750 | 122.09 |'"),
    ("+TF32 matmul batch 1", "bf16", 1, 79013, "'| Software: tensorcores | 79013 | 122.50 |'"),
    ("all opts batch 64x1024", "bf16", 64, 350000, "'| Software: larger batch size (65K) | 350,000 | 542.64 |' 'hitting close to **350K TPS** for the largest batch size' "
     "'largest power of 2 batch size before the GPU ran out of memory was of 65K tokens (65 sequences of 1024 tokens)'"),
]
for _s, _p, _m, _t, _q in _jj_ladder:
    ROWS.append(dict(name=f"jjschwartz GPT-2 124M 1xH100 {_s}", gpu="H100", n_gpus=1, n_layer=12, n_embd=768, seq=1024, micro=_m, accum=1,
                     stage=0, tokens_per_s_per_gpu=float(_t), whole_run=False, untied=False, vocab=50257, checkpointing=False,
                     precision=_p, trainer="custom PyTorch (llm.c-python style)", source=_JJ + "Quote: " + _q,
                     assumptions=_JJ_ASM + "Single GPU, 1000-step runs (~1M tokens) for the batch-1 ladder; cumulative optimizations "
                                 "(each row includes all previous ones). '65K' read as 64 sequences x 1024 = 65,536 tokens (the post says both "
                                 "'65K tokens' and '65 sequences'; power of 2 -> 64). ~350,000 is rounded."))
ROWS += [
    dict(name="jjschwartz GPT-2 124M DDP 8xH100 steady", gpu="H100", n_gpus=8, n_layer=12, n_embd=768, seq=1024, micro=64, accum=1,
         stage=0, tokens_per_s_per_gpu=3046409 / 8, whole_run=False, untied=False, vocab=50257, checkpointing=False, precision="bf16",
         trainer="custom PyTorch DDP + torch.compile (llm.c-python style)",
         source=_JJ + "Quote: '| **Distributed: DDP on 8 H100's**  | **3,046,409** | **4,723.11** |' 'we are now at 3M TPS on a single node of 8 H100s'.",
         assumptions=_JJ_ASM + "Per-GPU micro 64 x 1024 carried over from the single-GPU best setting; total batch 524K ('gpt2 124M used batch "
                     "size of 500K') -> accum 1. bf16 autocast, SDPA flash attention, compile, fused AdamW."),
    dict(name="jjschwartz GPT-2 124M DDP 8xH100 whole run 10B (FineWeb-Edu)", gpu="H100", n_gpus=8, n_layer=12, n_embd=768, seq=1024,
         micro=64, accum=1, stage=0, tokens_per_s_per_gpu=18865 * 524288 / (59.5 * 60) / 8, whole_run=True, untied=False, vocab=50257,
         checkpointing=False, precision="bf16", trainer="custom PyTorch DDP + torch.compile (llm.c-python style)",
         source=_JJ + "Quotes: 'The total training time was ~60 min, about 5 min more than predicted, though this run also includes periodic "
                "validation' '| gpt2 124m fineweb edu 10B | 18865 | 0.2886 | 0.3007 |' '... the time it took to train the 124M model (59.5 min).'",
         assumptions=_JJ_ASM + "Whole run = 18865 steps x 524,288 tokens in 59.5 min INCLUDING periodic validation. micro 64 assumed as above."),
    dict(name="jjschwartz GPT-2 1.5B (XL) DDP 8xH100 steady", gpu="H100", n_gpus=8, n_layer=48, n_embd=1600, seq=1024, micro=16, accum=8,
         stage=0, tokens_per_s_per_gpu=320e3 / 8, whole_run=False, untied=False, vocab=50257, checkpointing=False, precision="bf16",
         trainer="custom PyTorch DDP + torch.compile (llm.c-python style)",
         source=_JJ + "Quotes: 'I was able to use a batch size of 16 sequences of 1024 tokens, so total of around 16K tokens per GPU' "
                "'we need to use 8 gradient accumulation steps to hit the total batch size' 'around 320K TPS across the 8 H100s. Interestingly, "
                "this corresponds to around 41.94% MFU'.",
         assumptions=_JJ_ASM + "GPT-2 XL: 48 layers, d_model 1600, 25 heads. '~320K' is approximate (read off a plot / rounded)."),
    dict(name="jjschwartz GPT-2 1.5B (XL) DDP 8xH100 whole run ~10B", gpu="H100", n_gpus=8, n_layer=48, n_embd=1600, seq=1024, micro=16,
         accum=8, stage=0, tokens_per_s_per_gpu=9500 * 16 * 1024 * 8 * 8 / (582 * 60) / 8, whole_run=True, untied=False, vocab=50257,
         checkpointing=False, precision="bf16", trainer="custom PyTorch DDP + torch.compile (llm.c-python style)",
         source=_JJ + "Quotes: 'Total training time was 582 min' '| gpt2 1.5B fineweb edu 10B | 9500 | 0.3450 | 0.4122 |' (training steps 9500) "
                "'16K tokens X 8 GPUs = 128K tokens per step, we need to use 8 gradient accumulation steps'.",
         assumptions=_JJ_ASM + "Whole run = 9500 steps x (16*1024*8*8 = 1,048,576) tokens in 582 min; likely includes periodic validation "
                     "like the 124M run (not stated)."),
]

# ---------------- Xu, Bosselut, Schlag, "Positional Fragility in LLMs" (ETH/EPFL, NeurIPS-2025 format), Appendix A.1 ----------------
# !! GPU is a GH200 Grace Hopper superchip's Hopper H100 GPU with 96 GB (CSCS Alps), NOT a standard H100 SXM 80GB. Labelled "H100"
# !! because the kind list has no GH200; drop these rows if GH200 should not count as H100.
_PF_SRC = ("Paper 'Positional Fragility in LLMs: How Offset Effects Reshape Our Understanding of Memorization Risks' (Yixuan Xu, Antoine "
           "Bosselut, Imanol Schlag; code github.com/Alvorecer721/Positional_Fragility_LLM), stored text (search index file id 53603742869), "
           "Appendix A.1/A.2. Quotes: 'Each compute node includes four NVIDIA GH200 Grace Hopper Superchips, with each GH200 integrating a "
           "72-core ARM-based Grace CPU and a Hopper H100 GPU ... Each GPU provides 96 GB of CUDA memory.' 'For most of our pretrain runs, we "
           "utilized a 15-node configuration. Each GPU processed a maximum micro-batch size of 3 sequences, each consisting of 8,192 tokens.' "
           "'Pretraining of the 1B, 3B, and 8B LLaMA models was orchestrated exclusively using Data Parallelism (DP).' 'Table 4: Aggregate "
           "pretraining throughput (tokens per second across all 60 GPUs) and total GPU hours required for pretraining each model scale.' "
           "'| 1B | 2,308,935 | ∼ 600 |' '| 3B | 936,003 | ∼ 1,440 |' '| 8B | 450,017 | ∼ 3,060 |' 'We pretrain our models using an adapted "
           "version of NVIDIA Megatron-LM'. Table 5: Shared Input-Output Projections Yes/Yes/No; Hidden 2,048/3,072/4,096; Intermediate "
           "8,192/8,192/14,336; Layers 16/28/32; Heads 32/24/32; KV heads 8; Head dim 64/128/128; Vocabulary 128,256; 'Batch Size | 60'.")
_PF_ASM = ("GH200 (H100 96GB HBM3) labelled H100 -- see note. 60 GPUs (15 nodes x 4). Global batch 60 sequences of 8192 (~0.5M tokens) on "
           "60 GPUs -> micro 1, accum 1 (assumed; the paper also says 'maximum micro-batch size of 3'). Megatron-LM DP: distributed optimizer "
           "not stated -> stage 1 ASSUMED (an 8B model with Adam cannot fit 96 GB under plain DDP, so the Megatron distributed optimizer was almost surely on; assumed the same script for 1B/3B); precision not stated -> bf16 assumed; activation recompute not stated -> none assumed. ")
ROWS += [
    dict(name="PositionalFragility Llama-1B Megatron DP 60xGH200(H100-96GB)", gpu="H100", n_gpus=60, n_layer=16, n_embd=_w(2048, 8, 64, 8192),
         seq=8192, micro=1, accum=1, stage=1, tokens_per_s_per_gpu=2308935 / 60, whole_run=False, untied=False, vocab=128256,
         checkpointing=False, precision="bf16", trainer="Megatron-LM (adapted), DP only", source=_PF_SRC,
         assumptions=_PF_ASM + "1B block: W = round(sqrt((2*2048^2 + 2*2048*(8*64) + 3*2048*8192)/12)) = 2251; tied embeddings."),
    dict(name="PositionalFragility Llama-3B Megatron DP 60xGH200(H100-96GB)", gpu="H100", n_gpus=60, n_layer=28, n_embd=_w(3072, 8, 128, 8192),
         seq=8192, micro=1, accum=1, stage=1, tokens_per_s_per_gpu=936003 / 60, whole_run=False, untied=False, vocab=128256,
         checkpointing=False, precision="bf16", trainer="Megatron-LM (adapted), DP only", source=_PF_SRC,
         assumptions=_PF_ASM + "3B block: W = round(sqrt((2*3072^2 + 2*3072*(8*128) + 3*3072*8192)/12)) = 2896; tied embeddings."),
    dict(name="PositionalFragility Llama-8B Megatron DP 60xGH200(H100-96GB)", gpu="H100", n_gpus=60, n_layer=32, n_embd=_LLAMA3_8B_W,
         seq=8192, micro=1, accum=1, stage=1, tokens_per_s_per_gpu=450017 / 60, whole_run=False, untied=True, vocab=128256,
         checkpointing=False, precision="bf16", trainer="Megatron-LM (adapted), DP only", source=_PF_SRC,
         assumptions=_PF_ASM + "8B = Llama-3-8B block, W = 4263; untied. Pure DP (no ZeRO) of an 8B model with Adam on 96 GB is tight "
                     "(16 B/param ~ 128 GB) -- hence stage 1 (distributed optimizer) assumed."),
]
