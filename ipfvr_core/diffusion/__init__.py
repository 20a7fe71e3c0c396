"""The IP-FVR diffusion engine as a library: config, identity conditioning, guidance, blending, pipeline, weights."""

from ipfvr_core.diffusion.config import IPFVRConfig
from ipfvr_core.diffusion.pipeline_ipfvr import EncodedIdentity, IPFVRPipeline, IPFVRPipelineOutput
from ipfvr_core.diffusion.random_checkpoint import init_ipfvr_weights, write_tiny_checkpoint
from ipfvr_core.diffusion.weights import load_pipeline

__all__ = [
    "EncodedIdentity",
    "IPFVRConfig",
    "IPFVRPipeline",
    "IPFVRPipelineOutput",
    "init_ipfvr_weights",
    "load_pipeline",
    "write_tiny_checkpoint",
]
