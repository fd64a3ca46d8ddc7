"""The FID job's generator sources: ``num_samples`` samples of a generator SavedModel
(``--saved_model``) or of a trained model directory (``--model_dir``), sample ``i``
drawn with row seed ``seed * 2^31 + i`` (:func:`tfp_models.row_seeds.sample_row_seeds`:
the rows ``pipeline.evaluate`` draws for the same seed) and keyed by ``i``.
"""
from __future__ import annotations

import abc
import dataclasses
import os
from types import SimpleNamespace

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler

from beam_jobs.fid.batch_inference import BatchInference
from beam_jobs.fid.extractor_contract import SAMPLE_SIGNATURE, check_signature
from beam_jobs.fid.inference_handlers import ModelDirSamplerHandler, sampler_model_handler
from beam_jobs.fid.sources import DEFAULT_BATCH_SIZE, ImageSource
from tfp_models.row_seeds import sample_row_seeds


class _GeneratorSource(ImageSource):
    """``num_samples`` samples at ``temperature``, sample i drawn with row seed
    ``seed * 2^31 + i`` in batches of ``batch_size``; subclasses say where the generator
    is."""

    num_samples: int
    temperature: float
    seed: int
    batch_size: int

    @classmethod
    def from_args(cls, args: SimpleNamespace) -> "_GeneratorSource":
        """The source of the CLI's ``--<FLAG>``, ``--num_samples``, ``--temperature``,
        ``--seed`` and ``--batch_size``."""
        return cls(getattr(args, cls.FLAG), args.num_samples, args.temperature, args.seed,
                   args.batch_size)

    @abc.abstractmethod
    def model_handler(self) -> ModelHandler:
        """Model handler: int64 seed -> uint8 image [H, W, C]."""

    def _check_counts(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be positive, got {self.num_samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")

    @abc.abstractmethod
    def validate(self) -> None:
        """Raises a clear error unless the generator can be sampled as asked."""

    def size_hint(self) -> int:
        return self.num_samples

    def _seeds(self) -> str:
        return (f"seed {self.seed}: row seeds {self.seed} * 2^31 + 0..{self.num_samples - 1}, "
                f"temperature {self.temperature}")

    def transform(self) -> beam.PTransform:
        return ReadSampledImages(self)


@dataclasses.dataclass(frozen=True)
class SampleSource(_GeneratorSource):
    """``num_samples`` images from a generator SavedModel's ``sample`` signature."""

    FLAG = "saved_model"

    saved_model_dir: str
    num_samples: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def validate(self) -> None:
        self._check_counts()
        if not os.path.isdir(self.saved_model_dir):
            raise FileNotFoundError(f"generator SavedModel {self.saved_model_dir!r} does not exist")
        check_signature(self.saved_model_dir, SAMPLE_SIGNATURE,
                        {"seed": "int64", "temperature": "float32"})

    def model_handler(self) -> ModelHandler:
        return sampler_model_handler(self.saved_model_dir, batch_size=self.batch_size,
                                     temperature=self.temperature)

    def describe(self) -> str:
        return f"{self.num_samples} samples of {self.saved_model_dir} ({self._seeds()})"


@dataclasses.dataclass(frozen=True)
class ModelDirSampleSource(_GeneratorSource):
    """``num_samples`` images drawn straight from a trained model directory (written by
    ``pipeline.train``): the same rows as the export's ``sample`` signature, no export."""

    FLAG = "model_dir"

    model_dir: str
    num_samples: int
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE

    def validate(self) -> None:
        from artifacts import model_io

        self._check_counts()
        if not os.path.isfile(os.path.join(self.model_dir, model_io.CONFIG_FILE)):
            raise FileNotFoundError(f"model directory {self.model_dir!r} has no "
                                    f"{model_io.CONFIG_FILE}; expected one written by "
                                    "pipeline.train")

    def model_handler(self) -> ModelHandler:
        return ModelDirSamplerHandler(self.model_dir, batch_size=self.batch_size,
                                      temperature=self.temperature)

    def describe(self) -> str:
        return f"{self.num_samples} samples of model directory {self.model_dir} ({self._seeds()})"


class ReadSampledImages(beam.PTransform):
    """A generator source -> (sample index i, uint8 [H, W, C]); checks the source first."""

    def __init__(self, source: _GeneratorSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        s = self._source
        s.validate()
        return (pbegin | "Indices" >> beam.Create(range(s.num_samples))
                | "Seeds" >> beam.Map(lambda i, base: (i, base + i),
                                      int(sample_row_seeds(s.seed, 0, 1)[0]))
                | "Sample" >> BatchInference(s.model_handler(), s.batch_size, s.num_samples)
                | "Images" >> beam.MapTuple(lambda i, result: (i, result.inference)))
