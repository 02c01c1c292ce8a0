"""Engines: the seam between the training loop and a backend, and everything the two backends share.

  base.py              Engine (forward_loss / backward / step / save / load) and StepResult
  build.py             build_engine: picks the engine and applies the resume policy
  torch_engine.py      one process, CPU or one GPU
  deepspeed_engine.py  ZeRO 0-3 over any number of ranks
  resume.py            which engine wrote a checkpoint; same world size or DeepSpeed's universal format
  pickle_gate.py       no DeepSpeed file is unpickled before it passes weights_only loading
  chunked_loss.py      the LM loss in chunks of tokens: full fp32 logits never exist (train.chunked_loss)
  loss_plan.py         which loss a run computes, without torch (the doctor plans with it)
  lr_schedule.py, optim.py, loss.py, device.py, compile.py   what both engines share
"""
