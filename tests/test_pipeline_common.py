"""The generic pipeline tests of tests/pipeline_tester.py on tiny random `M6FashionPipeline`s (no data needed)."""

from pipeline_tester import PipelineTesterMixin


class TestM6FashionPipelineCommon(PipelineTesterMixin):
    """32x32 outputs from the 8x8 token grid (no `decoder_hr`)."""

    with_decoder_hr = False


class TestM6FashionPipelineHRCommon(PipelineTesterMixin):
    """With a `decoder_hr` painting 64x64 from the same tokens: default output the 64x48 portrait crop."""

    with_decoder_hr = True


class TestM6FashionPipelineFullPrefixCommon(PipelineTesterMixin):
    """A transformer whose prefix attends to the target (`prefix_attention="full"`): no prefix cache, every
    pass runs the whole sequence."""

    prefix_attention = "full"
