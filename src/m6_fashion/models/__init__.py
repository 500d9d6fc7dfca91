from .discriminator import StyleGANDiscriminator
from .pq_tokenizer import PQTokenizer, PQTokenizerOutput
from .style_decoder import StyleDecoder, StyleDecoderOutput
