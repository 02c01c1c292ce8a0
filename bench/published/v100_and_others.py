# Published training-throughput rows, task B (V100 / A10 / L4 / L40S / RTX 4090).
# Blind transcription: figures copied from the sources; arithmetic shown as python expressions.
ROWS = []

# ---------------------------------------------------------------------------
# BigScience, Jean Zay V100 benchmarks of the tr3m 1B3 GPT-2-style model (Megatron-DeepSpeed).
# Source file: github.com/bigscience-workshop/bigscience experiments/tr3m-1B3.md
#   (last commit touching it 1dee360c5958c283c12470950658cd4b6482ad09, 2021-12-01)
# Model config from train/tr3-1B3-baseline/tr3m-1B3-emb-norm-pile.slurm (same repo, snapshot 9e64edec):
#   NLAYERS=24 NHIDDEN=2048 NHEADS=16 FFN_HIDDEN_SIZE=8192 SEQ_LEN=2048 GLOBAL_BATCH_SIZE=512, --fp16,
#   --checkpoint-activations, ZERO_STAGE=1, GPT-2 BPE vocab (50257, Megatron pads to 50304), tied embeddings (Megatron default).
# "Speed" column = seconds per iteration for the global batch of 512 (the file's own TFLOPs check:
#   perl -le '$ng=8; $sp=29; $ms=1.3; $gbs=512; $seqlen=2048; print $ms*4*2*$seqlen*$gbs / ( $sp * $ng * 1e3)' -> 47.0).
_BS_SRC = ("https://github.com/bigscience-workshop/bigscience/blob/1dee360c5958c283c12470950658cd4b6482ad09/experiments/tr3m-1B3.md "
           "(2021-12-01); config: train/tr3-1B3-baseline/tr3m-1B3-emb-norm-pile.slurm. ")
_BS_ASM = ("2 nodes x 4 V100 on Jean Zay; TP=1 PP=1 DP=8; GBS=512 so accum=512/(8*micro); seq 2048; "
           "vocab 50257 padded to 50304 by Megatron (assumed 50304 used in compute); tied input/output embedding (Megatron GPT default); "
           "ZeRO stage 1 from the slurm file (assumed same in the benchmark); fp16; extra --embed-layernorm (negligible). "
           "Megatron-DeepSpeed with DeepSpeed pipeline engine even at PP=1 (assumed). Measured without batch-size ramp-up. "
           "Note the repo warns JZ throughput varied +/-40% between allocations (experiments/gpt2.md).")
for _mbs, _sp, _mem in [(1, 29, "16GB"), (2, 29, "17GB"), (4, 28, "20GB"), (8, 28, "25GB")]:
    ROWS.append(dict(
        name=f"bigscience-tr3m-1B3-8xV100-32GB-dp8-mbs{_mbs}-ckpt",
        gpu="V100", n_gpus=8, n_layer=24, n_embd=2048, seq=2048, micro=_mbs, accum=512 // (8 * _mbs), stage=1,
        tokens_per_s_per_gpu=512 * 2048 / _sp / 8,
        whole_run=False, untied=False, vocab=50304, checkpointing=True, precision="fp16", trainer="Megatron-DeepSpeed",
        source=_BS_SRC + f"Section '# 32GB node', table row: '|      2 |   1 |   1 |   8 |   {_mbs} |    {_sp} |   ... | {_mem} |' "
               "(columns NNODES | TP | PP | DP | MBS | Speed | TFlops | Notes). GPU memory: V100 32GB (--constraint=v100-32g).",
        assumptions=_BS_ASM + f" tokens/s/GPU = 512*2048/{_sp}/8."))
ROWS.append(dict(
    name="bigscience-tr3m-1B3-8xV100-32GB-dp8-mbs1-no-ckpt",
    gpu="V100", n_gpus=8, n_layer=24, n_embd=2048, seq=2048, micro=1, accum=64, stage=1,
    tokens_per_s_per_gpu=512 * 2048 / 23 / 8,
    whole_run=False, untied=False, vocab=50304, checkpointing=False, precision="fp16", trainer="Megatron-DeepSpeed",
    source=_BS_SRC + "'After removing `--checkpoint-activations` (which changes the factor to 3 from 4 for TFLOPs calculation)' "
           "table row: '|      2 |   1 |   1 |   8 |   1 |    23 |   44.4 | 27GB                  |'. GPU: V100 32GB.",
    assumptions=_BS_ASM + " tokens/s/GPU = 512*2048/23/8."))
ROWS.append(dict(
    name="bigscience-tr3m-1B3-8xV100-16GB-dp8-mbs1-ckpt",
    gpu="V100", n_gpus=8, n_layer=24, n_embd=2048, seq=2048, micro=1, accum=64, stage=1,
    tokens_per_s_per_gpu=512 * 2048 / 29 / 8,
    whole_run=False, untied=False, vocab=50304, checkpointing=True, precision="fp16", trainer="Megatron-DeepSpeed",
    source=_BS_SRC + "Section '# 16GB node' ('Same as above but with 16GB gpus', --constraint=v100-16g), table row: "
           "'|      2 |   1 |   1 |   8 |   1 |    29 |   47.0 | 16GB borderline OOM   |'. GPU: V100 16GB.",
    assumptions=_BS_ASM + " tokens/s/GPU = 512*2048/29/8."))

# BigScience jz/archs/gpt2.md: Megatron-LM GPT-2 345M fine-tune on a single Jean Zay V100.
ROWS.append(dict(
    name="bigscience-jz-megatron-gpt2-345M-1xV100",
    gpu="V100", n_gpus=1, n_layer=24, n_embd=1024, seq=1024, micro=4, accum=2, stage=0,
    tokens_per_s_per_gpu=8 * 1024 / 0.637,
    whole_run=False, untied=False, vocab=50304, checkpointing=True, precision="fp16", trainer="Megatron-LM",
    source=("https://github.com/bigscience-workshop/bigscience/blob/1b92f33725f9f68491e369ae8d3deaa9da86e908/jz/archs/gpt2.md "
            "(2021-08-05), section '### Megatron: finetuning on a single GPU', 'Setup: 1 node / 1 gpu', args "
            "'--num-layers 24 --hidden-size 1024 --num-attention-heads 16 --seq-length 1024 --micro-batch-size 4 --global-batch-size 8 ... "
            "--fp16 --checkpoint-activations', then 'Speed: 0.637s / iteration'."),
    assumptions=("Fine-tuning from the NVIDIA megatron_lm_345m checkpoint (same compute as pre-training). GPU memory not stated "
                 "(srun without -C; JZ has V100 16GB and 32GB) - assumed 16GB or 32GB, unknown. Vocab GPT-2 50257 padded to 50304 (Megatron). "
                 "Tied embeddings (Megatron default). Speed presumably averaged over 1000 iters of 'elapsed time per iteration'; "
                 "run was only 1000 iterations on openwebtext-10k. tokens/s = 8*1024/0.637.")))

# ---------------------------------------------------------------------------
# DeepSpeedExamples autotuning with HF run_clm.py on 1 node x 16 V100 (transformers 4.12.0).
_AT = "https://github.com/microsoft/DeepSpeedExamples/blob/83757d9c937daabd1089a08051061706cb73900d/training/autotuning/hf/"
_AT_ASM = ("HF run_clm.py fine-tuning of pretrained gpt2 models on wikitext-2, fp16, 'runs on 1 node with 16 Nvidia V100 GPUs' "
           "(16 V100 in one node => DGX-2 class, V100 32GB assumed). Sequence = run_clm default block_size = 1024 (assumed, "
           "not passed on the command line). samples/s is HF Trainer train_samples_per_second (global, all 16 GPUs); "
           "short runs (max_steps 200; 50 for gpt2-xl) so includes start-up of the loop. Tied embeddings, vocab 50257. "
           "No gradient checkpointing (not enabled in the scripts). ")
def _at(name, model, nl, ne, sps, mbs, stage, trainer, quote, extra="", seq=1024):
    ROWS.append(dict(
        name=name, gpu="V100", n_gpus=16, n_layer=nl, n_embd=ne, seq=seq, micro=mbs, accum=1, stage=stage,
        tokens_per_s_per_gpu=sps * seq / 16,
        whole_run=False, untied=False, vocab=50257, checkpointing=False, precision="fp16", trainer=trainer,
        source=_AT + "README.md (commit 83757d9c, 2025-02-11 snapshot; README written 2021-2022) table 'Throughput Comparison', " + quote,
        assumptions=_AT_ASM + extra + f" tokens/s/GPU = {sps}*{seq}/16."))
_at("ds-autotune-hf-gpt2-baseline-ddp", "gpt2", 12, 768, 284.142, 8, 0, "HF Trainer (torch DDP)",
    "row '|     GPT2     |   0.12B    |   284.142 (gas = 1,mbs = 8)   | ...' (column 'baseline (vanila HF)')")
_at("ds-autotune-hf-gpt2-ds-z1-mbs8", "gpt2", 12, 768, 397.827, 8, 1, "HF Trainer + DeepSpeed",
    "row GPT2, column 'HF + DS hand-tuned': '397.827 (z = 1, gas = 1, mbs = 8)'")
_at("ds-autotune-hf-gpt2-ds-autotuned-z1", "gpt2", 12, 768, 431.586, 14, 1, "HF Trainer + DeepSpeed",
    "row GPT2, column 'HF + DS autotuning (fast-mode)': '431.586 (z1_gas1_tmbspg14)'",
    extra="Micro batch ambiguous: top-level README says tmbspg14, gpt2/README.md says 'z1_gas1_tmbspg15' (14 used here). ")
_at("ds-autotune-hf-gpt2-medium-baseline-ddp", "gpt2-medium", 24, 1024, 71.61, 2, 0, "HF Trainer (torch DDP)",
    "row '| GPT2-medium  |   0.35B    |   71.61 (gas = 1, mbs = 2)    | ...' (column 'baseline (vanila HF)')")
_at("ds-autotune-hf-gpt2-medium-ds-z1-mbs4", "gpt2-medium", 24, 1024, 142.211, 4, 1, "HF Trainer + DeepSpeed",
    "row GPT2-medium, column 'HF + DS hand-tuned': '142.211 (z = 1, gas = 1, mbs = 4)'")
_at("ds-autotune-hf-gpt2-medium-ds-autotuned-z1-mbs6", "gpt2-medium", 24, 1024, 163.3, 6, 1, "HF Trainer + DeepSpeed",
    "row GPT2-medium, column 'HF + DS autotuning (fast-mode)': '163.3 (z1_gas1_tmbspg6)'")
_at("ds-autotune-hf-gpt2-large-baseline-ddp", "gpt2-large", 36, 1280, 27.874, 1, 0, "HF Trainer (torch DDP)",
    "row '|  GPT2-large  |   0.77B    |   27.874 (gas = 1, mbs = 1)   | ...' (column 'baseline (vanila HF)')")
_at("ds-autotune-hf-gpt2-large-ds-z1-mbs2", "gpt2-large", 36, 1280, 56.797, 2, 1, "HF Trainer + DeepSpeed",
    "row GPT2-large, column 'HF + DS hand-tuned': '56.797 (z = 1, gas = 1, mbs = 2)'")
_at("ds-autotune-hf-gpt2-large-ds-autotuned-z1-mbs3", "gpt2-large", 36, 1280, 69.061, 3, 1, "HF Trainer + DeepSpeed",
    "row GPT2-large, column 'HF + DS autotuning (fast-mode)': '69.061 (z = 1, mbs = 3)'")
_at("ds-autotune-hf-gpt2-xl-ds-z1-mbs1", "gpt2-xl", 48, 1600, 27.462, 1, 1, "HF Trainer + DeepSpeed",
    "row '|   GPT2-xl    |    1.5B    |         Not runnable          |      27.462 (gas = 1, mbs = 1)       | ...'; "
    "gpt2-xl/README.md: 'Zero1 (27.462, gas = 1, mbs = 1)'",
    extra="gpt2-xl script uses MAX_STEPS=50 (very short run). ")
_at("ds-autotune-hf-gpt2-xl-ds-autotuned-z1-mbs1", "gpt2-xl", 48, 1600, 27.497, 1, 1, "HF Trainer + DeepSpeed",
    "row GPT2-xl, column 'HF + DS autotuning (fast-mode)': '27.497 (z1_gas1_tmbspg1)'",
    extra="DOUBTFUL seq: the gpt2-xl 'tune' command passes '--block_size 512' (used here, seq=512), unlike the other modes; "
          "MAX_STEPS=50. ", seq=512)

# ---------------------------------------------------------------------------
# DeepSpeed-Chat step-1 SFT of OPT-1.3B on 16 x V100-32GB (DGX-2 node), published training log.
ROWS.append(dict(
    name="deepspeed-chat-sft-opt-1.3b-16xV100-32GB-z2",
    gpu="V100", n_gpus=16, n_layer=24, n_embd=2048, seq=512, micro=8, accum=1, stage=2,
    tokens_per_s_per_gpu=171.70918179266272 * 512 / 16,
    whole_run=False, untied=False, vocab=50272, checkpointing=False, precision="fp16", trainer="DeepSpeed (DeepSpeed-Chat main.py, HF OPT model)",
    source=("https://github.com/microsoft/DeepSpeedExamples/blob/3a77097a7b6ce67b78ea7c05129b90915cfebbb0/applications/DeepSpeed-Chat/"
            "training/step1_supervised_finetuning/training_log_output/opt-1.3b-globalBatchSize128.log (log dated 2023-04-18, committed 2023-04-21); "
            "training/README.md: 'We are sharing our training logs ... trained with x16-V100-32GB GPUs'. Log cmd: '--model_name_or_path facebook/opt-1.3b "
            "--per_device_train_batch_size 8 ... --max_seq_len 512 ... --gradient_accumulation_steps 1 ... --zero_stage 2 --deepspeed'. Log line: "
            "'epoch=4/micro_step=160/global_step=2000, RunningAvgSamplesPerSec=171.70918179266272, CurrSamplesPerSec=171.52381463561755, "
            "MemAllocated=3.96GB, MaxMemAllocated=22.95GB'."),
    assumptions=("OPT-1.3B: 24 layers, d_model 2048, FFN 8192, vocab 50272, learned positions, tied lm_head (HF OPT default), ReLU MLP. "
                 "RunningAvgSamplesPerSec is DeepSpeed ThroughputTimer on the global train batch (128 = 8 x 16); consistent with log timestamps "
                 "(10 steps ~7.45 s -> 128*10/7.45 = 172 samples/s). Sequences padded to max_seq_len=512 (dschat data_utils uses padding='max_length'), "
                 "so 512 tokens/sample assumed processed. fp16 assumed (DeepSpeed-Chat default ds config dtype). No gradient checkpointing "
                 "(flag not passed). Fine-tuning (SFT) compute = LM training compute. tokens/s/GPU = 171.709*512/16.")))

# ---------------------------------------------------------------------------
# NVIDIA Megatron-LM (2019 blog / arXiv 1909.08053) and Megatron-LM v1.0 blog (2020): 1.2B GPT-2 config on DGX-2H V100 32GB.
# Config 1 (Table 1 of the 2019 blog, html comment in _projects/megatron-lm.md): hidden 1536, 16 heads, 40 layers, 1.2B,
#   "Model parallel GPUs 1", "Model+data parallel GPUs 64"; padded vocab 51,200; batch 8 for model-parallel scaling,
#   global batch 512 (=64-way DP x 8) for model+data parallel.
_MEG19 = ("https://github.com/nv-adlr/nv-adlr.github.io/blob/bb82aa6bbc92607042f21796e1f54b06901cedb0/_projects/megatron-lm.md "
          "(blog https://nv-adlr.github.io/MegatronLM, dated 2019-08-13; same numbers as arXiv 1909.08053). ")
_MEG_ASM = ("Config 1: n_layer 40, hidden 1536, 16 heads, seq 1024 (GPT-2 context; assumed, not restated in the blog), padded vocab 51200, "
            "tied embedding/logit layer (Megatron GPT-2 default), fp16 mixed precision, activation checkpointing assumed ON "
            "(Megatron 2019 GPT-2 runs used --checkpoint-activations). GPU: 'Tesla V100 SXM3 32GB' in DGX-2H (450 W, higher clock: "
            "39 TF = 30% => peak ~130 TF). FLOPs per iteration are NOT given in the 2019 source; converted here with the FLOPs/iteration "
            "implied by the v1.0 blog for the same 1.2B baseline (62.4e12 FLOP/s x 1.288 s = 8.037e13 FLOP per batch-8 iteration) - assumed "
            "same FLOP count convention. (With Megatron-2021 formula 96*B*s*l*h^2*(1+s/6h+V/16lh) = 8.633e13 the result would be ~7% higher.) ")
_FLOP_PER_IT = 62.4e12 * 1.288
ROWS.append(dict(
    name="megatron2019-1.2B-1xV100-32GB-DGX2H",
    gpu="V100", n_gpus=1, n_layer=40, n_embd=1536, seq=1024, micro=8, accum=1, stage=0,
    tokens_per_s_per_gpu=8 * 1024 / (_FLOP_PER_IT / 39e12),
    whole_run=False, untied=False, vocab=51200, checkpointing=True, precision="fp16", trainer="Megatron-LM (2019)",
    source=_MEG19 + "'Without model parallelism, we can fit a baseline model of 1.2B parameters on a single V100 32GB GPU, and sustain "
           "39 TeraFLOPS during the overall training process, which is 30% of the theoretical peak FLOPS for a single GPU in a DGX2-H server.' "
           "'For the model parallel scaling, a fixed batch size of 8 is used across all configurations.'",
    assumptions=_MEG_ASM + "tokens/s = 8*1024 / (8.037e13 / 39e12)."))
ROWS.append(dict(
    name="megatron2019-1.2B-64xV100-32GB-DP64",
    gpu="V100", n_gpus=64, n_layer=40, n_embd=1536, seq=1024, micro=8, accum=1, stage=0,
    tokens_per_s_per_gpu=0.96 * 8 * 1024 / (_FLOP_PER_IT / 39e12),
    whole_run=False, untied=False, vocab=51200, checkpointing=True, precision="fp16", trainer="Megatron-LM (2019)",
    source=_MEG19 + "Config 1 'Model+data parallel GPUs 64' (pure 64-way data parallel, MP=1); 'for the model+data parallel cases we fix the "
           "global batch size to 512 for all experiments which corresponds to 64-way data parallelism'; Figure 4 right "
           "(images/megatronlm/weak_scaling.jpg, bar labels read from the image): 64 GPUs -> '96%' weak scaling relative to the 39 TFLOPS "
           "single-GPU baseline; 4 DGX-2H servers, 'up to 32 DGX-2H servers (a total of 512 Tesla V100 SXM3 32GB GPUs)', "
           "'300 GB/sec bandwidth between GPUs inside a server and 100 GB/sec of interconnect bandwidth between servers'.",
    assumptions=_MEG_ASM + "Micro batch 8 per GPU = 512/64, no accumulation. Weak scaling % read from the bar label in a figure image. "
                "tokens/s/GPU = 0.96 * single-GPU value."))
ROWS.append(dict(
    name="megatron-v1.0-1.2B-1xV100-32GB-DGX2H",
    gpu="V100", n_gpus=1, n_layer=40, n_embd=1536, seq=1024, micro=8, accum=1, stage=0,
    tokens_per_s_per_gpu=8 * 1024 / 1.288,
    whole_run=False, untied=False, vocab=51200, checkpointing=True, precision="fp16", trainer="Megatron-LM v1.0",
    source=("https://github.com/nv-adlr/nv-adlr.github.io/blob/1576088d8bfb9545ade735218d41681ba4b5993c/_projects/megatron-lm-v1.md "
            "(blog https://nv-adlr.github.io/MegatronLMV1, dated 2020-05-15): 'our baseline model with 1.2 billion parameters now achieves "
            "62.4 teraFLOPs which is 48% of the theoretical peak FLOPS for a single GPU in a DGX2-H server'; 'We fixed the batch size to 8'; "
            "Table 1 row: '1.2 | 1 | 1288 | Baseline (100%)' (Number of Parameters (billions) | Model Parallel GPUs | Iteration Time (ms) | Weak Scaling)."),
    assumptions=("1.2B config assumed identical to 2019 config 1 (40 layers, hidden 1536, 16 heads, vocab 51200) - the v1.0 blog does not restate "
                 "it (its larger configs differ: 2.0B/8.7B). seq 1024 assumed. Checkpointing assumed on; fp16. V100 SXM3 32GB in DGX-2H. "
                 "tokens/s = 8*1024/1.288.")))

# ---------------------------------------------------------------------------
# Tyler Romero, "NanoGPT Speedrun Living Worklog" (2x RTX 4090), initial baseline = llm.c PyTorch trainer / modded-nanogpt initial commit.
ROWS.append(dict(
    name="tyler-romero-speedrun-baseline-2xRTX4090-ddp",
    gpu="RTX 4090", n_gpus=2, n_layer=12, n_embd=768, seq=1024, micro=32, accum=4, stage=0,
    tokens_per_s_per_gpu=262144 / 1.19134 / 2,
    whole_run=False, untied=False, vocab=50304, checkpointing=False, precision="bf16",
    trainer="llm.c PyTorch trainer (train_gpt2.py, torch.compile + DDP)",
    source=("https://tylerromero.com/posts/nanogpt-speedrun-worklog (post dated 2025-01-18..2025-03-08): progress table row "
            "'1 | Initial baseline | 8.13 hours | 6.44B | 220.7k | 2025/01/16 | b3c32f8 |' (Tokens/Second column, both GPUs). "
            "Run config and log: https://github.com/tyler-romero/nanogpt-speedrun commit b3c32f8937c1f4655c5eb9607970e03e351a6c08, run.sh "
            "('NUM_GPUS=2 ... --model d12 --batch_size 32 --sequence_length 1024 --total_batch_size 262144 --grad_accum_steps 4'), "
            "logs/4c627c0d-029c-4f8a-bd18-40f99b43b22e.txt last line 'step:24576/24576 train_loss:3.3289 train_time:29266506ms "
            "step_avg:1191.34ms tokens_seen:6.44e+09', 'Running pytorch 2.5.1+cu124', 'peak memory consumption: 18885 MiB'."),
    assumptions=("GPT-2 124M d12: 12 layers, 768 wide, 12 heads, vocab padded 50304, tied wte/lm_head, no biases, learned positions; "
                 "bf16 autocast, torch.compile, F.scaled_dot_product_attention (flash), plain DDP, AdamW. Micro batch 32 x 4 accumulation "
                 "per GPU (loader yields B*accum rows chunked into 4). RTX 4090 24GB. tokens/s/GPU = 262144/1.19134/2 (step_avg excludes "
                 "validation); the blog's 220.7k total matches within 0.3%.")))

# ---------------------------------------------------------------------------
# nanoGPT issues #179/#182 (akjindal53244): default train.py (GPT-2 124M on OpenWebText) on 1x RTX 4090, MFU reported vs A100 peak.
# nanoGPT estimate_mfu (model.py): flops_per_token = 6*N + 12*L*H*Q*T, N = get_num_params() (excludes wpe), flops_promised = 312e12 (A100 bf16).
_N_NANOGPT = 50304 * 768 + 12 * (768 + 768 * 2304 + 768 * 768 + 768 + 768 * 3072 * 2) + 768   # bias=False default, tied wte
_FPT_NANOGPT = 6 * _N_NANOGPT + 12 * 12 * 12 * 64 * 1024
ROWS.append(dict(
    name="nanoGPT-default-124M-1xRTX4090-mfu29",
    gpu="RTX 4090", n_gpus=1, n_layer=12, n_embd=768, seq=1024, micro=12, accum=5, stage=0,
    tokens_per_s_per_gpu=0.29 * 312e12 / _FPT_NANOGPT,
    whole_run=False, untied=False, vocab=50304, checkpointing=False, precision="bf16", trainer="nanoGPT",
    source=("https://github.com/karpathy/nanoGPT/issues/182 comment by akjindal53244, 2023-03-02: 'Hi @yohan-pg , on 1x 4090 GPU, I am "
            "getting 29% MFU while training GPT-2 124M model.'; same user's issue https://github.com/karpathy/nanoGPT/issues/179 (2023-02-24) "
            "'I am running on 1x 4090 GPU and using pytorch 2.0 nighty build. Running `python train.py` as suggested with default parameters: "
            "... gradient_accumulation_steps = 5 ... batch_size = 12 ... block_size = 1024 n_layer = 12 n_head = 12 n_embd = 768 dropout = 0.0 ... bias = False'."),
    assumptions=("DOUBTFUL/approximate: MFU is a rounded EMA figure; nanoGPT's MFU is relative to the A100 312 TFLOPS peak (flops_promised "
                 "not edited, per issue #182 discussion), with flops/token = 6N + 12*L*H*Q*T, N = 123,587,328 (vocab 50304, bias False, "
                 "tied, excluding wpe) -> 854.8 MFLOP/token; tokens/s = 0.29*312e12/854.8e6. Defaults of Feb-2023 train.py assumed: "
                 "bf16 autocast, torch.compile, flash SDPA, micro 12, accum 5, single GPU (no DDP). 24GB RTX 4090.")))

# ---------------------------------------------------------------------------
# Oneflow-Inc/DLPerf benchmarks on 4 nodes x 8 Tesla V100-SXM2-16GB (NVLink hybrid cube mesh, 100 Gb/s IB EDR), 2020-12 .. 2021-05.
_DLP = "https://github.com/Oneflow-Inc/DLPerf/blob/c89430bac64f64caabb0445ff7eb80175641454c/"
_DLP_ENV = ("Hardware per the source: 'Tesla V100-SXM2-16GB x 8', 'InfiniBand 100 Gb/sec (4X EDR)', 4 nodes (DGX-1-like NVLink topology, "
            "1 IB NIC per node). ")
# (a) NVIDIA Megatron-LM commit 8aa4619f (NGC pytorch 20.12), script Megatron-LM/scripts/mutil_perf_pretrain_gpt_dp_mp_pp.sh:
#     SEQ_LENGTH=2048, --checkpoint-activations, --fp16, GPT-2 BPE vocab (Megatron pads 50257 -> 50304 at TP=1), tied embeddings.
_MEG_CASES = [  # case, n_gpus, n_layer, n_embd, micro, seq/s (Megatron-LM column of reports/GPT/dlperf_gpt_test_report_210512.md), latency quote
    ("DP_1x1x1_2_1536x16", 1, 16, 1536, 2, 4.31, "464.12 (ms)  |  43.25  |  35%"),
    ("DP_8x1x1_16_1536x16", 8, 16, 1536, 2, 33.27, "480.96 (ms)  |  41.74  |  33%"),
    ("DP_16x1x1_32_1536x16", 16, 16, 1536, 2, 48.16, "664.46 (ms)  |  30.21  |  24%"),
    ("DP_32x1x1_64_1536x16", 32, 16, 1536, 2, 93.63, "683.51 (ms)  |  29.37  |  23%"),
    ("MP_1x1x1_8_768x12", 1, 12, 768, 8, 13.09, "611.2 (ms)  |  32.63  |  26%"),
    ("2D_8x1x1_16_1536x16", 8, 16, 1536, 2, 33.32, "480.22 (ms)  |  41.80  |  33%"),
]
for _case, _n, _l, _h, _mb, _sps, _lat in _MEG_CASES:
    ROWS.append(dict(
        name=f"dlperf-megatron-lm-{_case}-V100-16GB",
        gpu="V100", n_gpus=_n, n_layer=_l, n_embd=_h, seq=2048, micro=_mb, accum=1, stage=0,
        tokens_per_s_per_gpu=_sps * 2048 / _n,
        whole_run=False, untied=False, vocab=50304, checkpointing=True, precision="fp16", trainer="Megatron-LM (NVIDIA, commit 8aa4619f)",
        source=(_DLP + "reports/GPT/dlperf_gpt_test_report_210512.md (2021-05-19), tables 'Data Parallelism Test' / 'Tensor Model Parallelism Test' / "
                f"'Data Parallelism and Tensor Model Parallelism Test': '{_case} | ... | {_sps}' (Megatron-LM sequences/sec); "
                f"Megatron-LM/README.md result table: '{_case}  |  {_lat}'; 'All models use a vocabulary size of 51,200 and a sequence length of 2048.'"),
        assumptions=(_DLP_ENV + f"Case naming: DPxTPxPP = {_case.split('_')[1]}, global batch = micro x DP (no accumulation), "
                     "TP=1, PP=1 (pure Megatron local DDP). seq 2048 from script (SEQ_LENGTH=2048). Vocab: report says 51,200 (Megatron paper "
                     "convention), actual Megatron TP=1 padding gives 50304 (used here). Activation checkpointing on (script flag). "
                     f"tokens/s/GPU = {_sps}*2048/{_n}.")))
# (b) OneFlow-GPT (OneFlow v0.3.5 build 75f11b8, OneFlow-Benchmark LanguageModeling/GPT), same cases/configs (checkpoint_activations True, fp16, seq 2048).
_OF_CASES = [
    ("DP_1x1x1_2_1536x16", 1, 16, 1536, 2, 4.92, "406.16 (ms) |  11066 (MiB) |  4.92 |  49.43"),
    ("DP_8x1x1_16_1536x16", 8, 16, 1536, 2, 38.28, "417.95 (ms) |  12404 (MiB) |  38.28 |  48.03"),
    ("DP_16x1x1_32_1536x16", 16, 16, 1536, 2, 65.35, "489.67 (ms) |  12200 (MiB) |  65.35 |  41"),
    ("DP_32x1x1_64_1536x16", 32, 16, 1536, 2, 123.4, "518.64 (ms) |  12208 (MiB) |  123.4 |  38.71"),
    ("MP_1x1x1_8_768x12", 1, 12, 768, 8, 15.23, "525.21 (ms) |  7416 (MiB) |  15.23 |  37.98"),
    ("2D_8x1x1_16_1536x16", 8, 16, 1536, 2, 38.29, "417.90 (ms) |  12396 (MiB) |  38.29 |  48.04"),
]
for _case, _n, _l, _h, _mb, _sps, _q in _OF_CASES:
    ROWS.append(dict(
        name=f"dlperf-oneflow-gpt-{_case}-V100-16GB",
        gpu="V100", n_gpus=_n, n_layer=_l, n_embd=_h, seq=2048, micro=_mb, accum=1, stage=0,
        tokens_per_s_per_gpu=_sps * 2048 / _n,
        whole_run=False, untied=False, vocab=50304, checkpointing=True, precision="fp16", trainer="OneFlow-GPT (OneFlow 0.3.5, not PyTorch)",
        source=(_DLP + "OneFlow/LanguageModeling/GPT/README.md, '测试结果' table row: "
                f"'|  | {_case} |  {_q} ...' (latency | memory | throuthput(sample/sec) | Achieved teraFLOP/s per GPU); "
                "same numbers in reports/GPT/dlperf_gpt_test_report_210512.md OneFlow column."),
        assumptions=(_DLP_ENV + "OneFlow framework (graph compiler, fused kernels: bias_gelu_fusion, scale_tril_softmax_dropout_fusion, "
                     "multihead_attention_fusion True per the printed args), data parallel without sharding (assumed stage 0), "
                     "checkpoint_activations True, fp16, seq 2048, make_vocab_size_divisible_by 128 -> 50304 at TP=1 (the example log "
                     "shows 50688 for a TP=4 run), tied embeddings (Megatron-style GPT assumed). "
                     f"tokens/s/GPU = {_sps}*2048/{_n}.")))
# (c) DeepSpeed (0.3.0+7d4d742, PyTorch 1.6) DeepSpeedExamples Megatron-LM GPT-2 small, ZeRO stage 0 vs 1, micro batch 4 per GPU.
for _tag, _n, _st, _sps, _q in [
        ("test-1-3", 8, 0, 198.6, "| 20201205 | test-1-3 | zero-stage-0 | 1n_8g_dp_4bs      | 15387         | 92          | 198.6                  |"),
        ("test-1-4", 8, 1, 195.8, "|          | test-1-4 | zero-stage-1 | 1n_8g_dp_4bs      | 14199(↓7.7%)  | 87          | 195.8 (↓1.4%)          |"),
        ("test-13-1", 16, 0, 269, "| 20201208 | test-13-1 | zero-stage-0 | 2n_8g_dp_4bs      | 15336              | 94          | 269                    |"),
        ("test-13-2", 16, 1, 261, "|          | test-13-2 | zero-stage-1 | 2n_8g_dp_4bs      | 14005(-1331,8.7↓%) | 93          | 261(3.0↓%)             |"),
        ("test-18-1", 32, 0, 533, "| 20201209 | test-18-1 | zero-stage-0     | 4n_8g_dp_4bs      | 15336              | 95          | 533                    |"),
        ("test-18-2", 32, 1, 506, "|          | test-18-2 | zero-stage-1     | 4n_8g_dp_4bs      | 13975(-1361,↓8.9%) | 92          | 506(↓5.3%)             |")]:
    ROWS.append(dict(
        name=f"dlperf-deepspeed-megatron-gpt2small-{_tag}-{_n}xV100-16GB-z{_st}",
        gpu="V100", n_gpus=_n, n_layer=12, n_embd=768, seq=1024, micro=4, accum=1, stage=_st,
        tokens_per_s_per_gpu=_sps * 1024 / _n,
        whole_run=False, untied=False, vocab=50304, checkpointing=False, precision="fp16",
        trainer="DeepSpeed 0.3.0 + DeepSpeedExamples Megatron-LM (GPT-2)",
        source=(_DLP + "DeepSpeed/Megatron-LM/README.md (last change 2021-04-12), '测试结果' table row: '" + _q + "' "
                "(columns date | test_num | test_desc | xn_xg_xdp_xmp_xbs | gpu_mem(mB) | gpu_util(%) | throuthput(sample/sec)); "
                "script DeepSpeed/Megatron-LM/scripts/ds_zero2_pretrain_gpt2_model_parallel.sh: '# gpt2-small num_layers=12 "
                "num_attention_heads=12 hidden_size=768', '--seq-length 1024', '--fp16', PREFIX=20201209-test_zero_gpt2-small."),
        assumptions=(_DLP_ENV + "GPT-2 small assumed for these rows (script default and log prefix; README says small and medium were "
                     "tested but the table does not name the model). Activation checkpointing assumed OFF (script default "
                     "CHECKPOINT_ACTIVATIONS=off). samples/s assumed global (DeepSpeed samples/sec over all GPUs). Vocab: old Megatron "
                     "GPT2BPETokenizer padded to 50304 (assumed), tied. Wikipedia data with lazy loader. "
                     f"tokens/s/GPU = {_sps}*1024/{_n}.")))
# (d) OneFlow re-implementation of the same DeepSpeedExamples Megatron-LM GPT-2 small test (oneflow 0.3b2 branch), with/without
#     'Optimizer-Placement Optimization' (non_distributed_optimizer; ZeRO-1-like optimizer state partitioning).
for _tag, _n, _mb, _st, _sps, _q in [
        ("test-10-1", 8, 1, 0, 104, "| 20201208 | test-10-1 | off_optimization  | 1n_8g_dp_1bs | 5603               | 73                     | 104        |"),
        ("test-10-2", 8, 1, 1, 89, "|          | test-10-2 | on_optimization   | 1n_8g_dp_1bs | 3849(-1754,↓31.3%) | 43                     | 89(↓14.4%) |"),
        ("test-10-3", 8, 4, 0, 239, "|          | test-10-3 | off_optimization  | 1n_8g_dp_4bs | 11301              | 95                     | 239        |"),
        ("test-10-4", 8, 4, 1, 235, "|          | test-10-4 | on_optimization   | 1n_8g_dp_4bs | 9547(-1754,↓15.5%) | 88                     | 235(↓1.7%) |"),
        ("test-14-1", 16, 4, 0, 412, "| 20201208 | test-14-1 | off_optimization | 2n_8g_dp_4bs      | 11087              | 96          | 412                    |"),
        ("test-14-2", 16, 4, 1, 395, "|          | test-14-2 | on_optimization  | 2n_8g_dp_4bs      | 9160(-1927,11.4↓%) | 92          | 395(4.1↓%)             |"),
        ("test-19-1", 32, 4, 0, 717, "| 20201209 | test-19-1 | off_optimization | 4n_8g_dp_4bs      | 11089              | 95          | 717                    |"),
        ("test-19-2", 32, 4, 1, 742, "|          | test-19-2 | on_optimization  | 4n_8g_dp_4bs      | 9082(-2727,↓23.1%) | 92          | 742(↑3.4%)             |")]:
    ROWS.append(dict(
        name=f"dlperf-oneflow-megatron-gpt2small-{_tag}-{_n}xV100-16GB-mbs{_mb}-{'opt-placement' if _st else 'plain-dp'}",
        gpu="V100", n_gpus=_n, n_layer=12, n_embd=768, seq=1024, micro=_mb, accum=1, stage=_st,
        tokens_per_s_per_gpu=_sps * 1024 / _n,
        whole_run=False, untied=False, vocab=50304, checkpointing=False, precision="fp16", trainer="OneFlow 0.3b2 (gpt-2 re-implementation, not PyTorch)",
        source=(_DLP + "OneFlow/Megatron-LM/README.md (last change 2021-04-12), table row: '" + _q + "'; '默认测试的网络为gpt2-small' "
                "(num_layers=12 num_attention_heads=12 hidden_size=768), 'batch_size_per_device为单卡batch_size', 'dtype 数据类型，默认为fp16混合精度', "
                "'non_distributed_optimizer 是否开启Optimizer-Placement Optimization优化'."),
        assumptions=(_DLP_ENV + "'on_optimization' = OneFlow optimizer-placement (optimizer states partitioned, ZeRO-1-like) mapped to stage 1; "
                     "'off' = plain DP (stage 0). Sequence length not stated in the README: assumed 1024 (GPT-2 small, mirrors the DeepSpeed "
                     "test it replicates). Checkpointing assumed off; vocab assumed 50304, tied. samples/s assumed global. "
                     f"tokens/s/GPU = {_sps}*1024/{_n}.")))
