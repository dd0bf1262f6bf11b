"""Skill text → LoRA adapter in one forward pass, plus the adapter math around it.

Imports torch, transformers, peft and safetensors only: nothing here knows of SQL or the agent.
"""

from .checkpoint import hypernet_from_bytes, hypernet_to_bytes, load_hypernet, save_hypernet
from .config import HypernetConfig, HypernetError
from .convert import ConvertTimings, convert
from .ema import EmaInfo, ema_update
from .encoder import MeanAggregator, PerceiverAggregator, chunk_ids, encode_states, states_cache_key
from .generator import LoraGenerator
from .hypernetwork import Hypernetwork, join_chunks
from .inject import LoraHandle, apply_lora
from .lora import LoraWeights
from .merge import MergeReport, concat_factors, merge, recompress, recompress_factors
from .peft_io import export_peft, import_peft
from .targets import Target, decoder_layers, find_targets, target_linears

__all__ = [
    "ConvertTimings", "EmaInfo", "HypernetConfig", "HypernetError", "Hypernetwork", "LoraGenerator", "LoraHandle",
    "LoraWeights", "MeanAggregator", "MergeReport", "PerceiverAggregator", "Target", "apply_lora", "chunk_ids",
    "concat_factors", "convert", "decoder_layers", "ema_update", "encode_states", "export_peft", "find_targets",
    "hypernet_from_bytes", "hypernet_to_bytes", "import_peft", "join_chunks", "load_hypernet", "merge",
    "recompress", "recompress_factors", "save_hypernet", "states_cache_key", "target_linears",
]
