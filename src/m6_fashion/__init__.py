"""M6-Fashion: multi-modal fashion image generation and editing."""

__version__ = "0.1.0"

from .models import PQTokenizer, PQTokenizerOutput, StyleDecoder, StyleDecoderOutput, StyleGANDiscriminator
# stage 2: importing the module registers M6FashionConfig / M6FashionTransformer with AutoConfig / AutoModel
from .models.transformer_m6fashion import M6FashionConfig, M6FashionTransformer, M6FashionTransformerOutput
from .schedulers import SMARTScheduler, SMARTSchedulerOutput
from .pipelines import M6FashionPipeline, M6FashionPipelineOutput

__all__ = [
    "PQTokenizer", "PQTokenizerOutput", "StyleDecoder", "StyleDecoderOutput", "StyleGANDiscriminator",
    "M6FashionConfig", "M6FashionTransformer", "M6FashionTransformerOutput",
    "SMARTScheduler", "SMARTSchedulerOutput", "M6FashionPipeline", "M6FashionPipelineOutput",
]
