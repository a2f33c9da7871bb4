"""Retrieval (sections 3.4-3.5 and the evaluation protocol of 4.2)."""

from fmn_core.retrieval.descriptors import DescriptorTable, extract_descriptors
from fmn_core.retrieval.distance import pairwise_distance
from fmn_core.retrieval.evaluation import EvaluationResult, evaluate
from fmn_core.retrieval.extractor import FeatureExtractor

__all__ = ["DescriptorTable", "EvaluationResult", "FeatureExtractor", "evaluate", "extract_descriptors",
           "pairwise_distance"]
