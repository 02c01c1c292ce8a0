"""Data: text files or prepared token shards in, this rank's training batches out, with an exact resume cursor.

  contract.py   the TrainStream interface the loop reads through (drain_pulled for the trace), and Window
  build.py      build_train_stream / build_val: the loop's only calls, whatever the format
  text.py       files -> rows -> cleaned documents (both paths read text through here)
  local.py      local files, directories and save_to_disk folders read by our own reader (never the network)
  encodings.py  data.encoding, and a decode error that names the likely encoding
  sources.py    data files named by URL (hub datasets, buckets)
  sharding.py   who reads which file/row, cursor entries as types, re-splitting cursors on a world-size change
  stream.py     data.format=stream: tokenize while training (TextStream)
  tokens.py     its token buffer: O(window) cuts, and which document each buffered token came from
  pieces.py     long documents in exact pieces (where to cut, which tokenizers allow it)
  prefetch.py   the same in a DataLoader worker, ahead of the loop
  mixing.py     data.weights on the streaming path (MixedStream)
  prepare.py    `gpt2dist prepare`: tokenize once into packed shards
  shardwriter.py  its output: many files' tokens in shared shards, sealed and recorded a group at a time
  manifest.py   the prepared data's manifest (what, how, from which bytes)
  schedule.py   the packed path's shuffled, mixed sample order
  packed.py     data.format=packed: memory-mapped shards (PackedBatches)
  epochs.py     train.num_epochs: one pass's windows counted, the step budget derived and kept
  checks.py     cheap checks for the preflight: will every rank get data
  trace.py      an audit trail of consumed windows (logging.trace_windows)
"""
