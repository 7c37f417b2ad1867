"""Train, validate, test or predict with the detector, or find a learning rate.

    python train.py fit      --config configs/shapes.yaml            # one GPU, or the CPU
    python train.py fit      --config configs/lesson9_ssd.yaml --trainer.devices -1 \
                             --trainer.strategy ddp_find_unused_parameters_true   # DDP, every GPU
    python train.py fit      --config configs/shapes.yaml --ckpt_path last            # resume
    python train.py validate --config configs/shapes.yaml --ckpt_path best
    python train.py lr_find  --config configs/shapes.yaml           # saves lr_find.png + suggestion

LightningCLI reads one YAML per experiment, saves the resolved config with every run, and links the
values that must agree: the data's classes -> the model's, the model's image size -> the data's,
the backbone's input statistics -> the data's normalisation, the recipe's length -> max_epochs.
Before anything is built it checks the model section (``detector.checks``) and that the checkpoint
given with ``--ckpt_path`` can be read; mistakes found there exit with a message naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI

from detector.checks import CheckpointError, check_model_config, read_checkpoint
from detector.data.datamodule import DetectionDataModule
from detector.lr_finder import lr_range_test
from detector.model import backbone_stats
from detector.module import StagedModule


def _total_epochs(stages: Any) -> int:
    """Sum of the recipe's stage lengths, whether jsonargparse hands over dicts or Namespaces."""

    def epochs(stage: Any) -> int:
        stage = getattr(stage, "init_args", stage)
        return stage["epochs"] if isinstance(stage, dict) else stage.epochs

    return sum(epochs(s) for s in stages)


class DetectorTrainer(Trainer):
    """Lightning's Trainer plus the ``lr_find`` subcommand."""

    def lr_find(
        self,
        model: StagedModule,
        datamodule: DetectionDataModule,
        min_lr: float = 1e-5,
        max_lr: float = 1.0,
        num_steps: int = 100,
        out: str = "lr_find.png",
    ) -> float:
        """Run the LR range test on the recipe's first stage; save the plot; print the suggestion."""
        datamodule.prepare_data()
        datamodule.setup("fit")
        device = "cuda" if torch.cuda.is_available() and self.accelerator.__class__.__name__ == "CUDAAccelerator" else "cpu"
        result = lr_range_test(model, datamodule.train_dataloader(), min_lr, max_lr, num_steps, device=device)
        path = result.plot(out)
        print(f"lr_find: suggested head learning rate {result.suggestion:.3g} (plot: {path})")
        return result.suggestion


class DetectorCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: Any) -> None:
        # The DataModule shards its data itself under DDP (no padded duplicates in evaluation).
        parser.set_defaults({"trainer.use_distributed_sampler": False})
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("model.init_args.image_size", "data.image_size")
        parser.link_arguments("model.init_args.backbone", "data.mean", compute_fn=backbone_mean)
        parser.link_arguments("model.init_args.backbone", "data.std", compute_fn=backbone_std)
        parser.link_arguments("model.init_args.stages", "trainer.max_epochs", compute_fn=_total_epochs)

    def _parse_ckpt_path(self) -> None:
        """The configuration decides the model, with ``--ckpt_path last`` and with a file alike.

        LightningCLI 2.6 would merge a checkpoint file's hyperparameters over the config's model
        section here (not for ``last``), so that the YAML and the command line silently lose to the
        checkpoint; and the merge cannot even parse ours (``StagedModule`` saves its hparams
        without LightningCLI's ``_class_path``, so jsonargparse checks them against the base class
        and stops with "Option 'anchors.grids' is not accepted"). Instead, a checkpoint that does not
        fit the configured model is refused by ``StagedModule.on_load_checkpoint``, saying what differs.
        """

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        problems = check_model_config(config.model.as_dict()) if config.get("model") else []
        if problems:
            raise SystemExit(f"train.py {self.subcommand}: configuration error:\n  " + "\n  ".join(problems))
        path = _resolve_checkpoint(config.ckpt_path, config.trainer) if config.get("ckpt_path") else None
        if path is None:
            return
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError as e:
            raise SystemExit(f"train.py {self.subcommand}: --ckpt_path {e}") from None
        if self.subcommand == "fit":
            continue_logger_runs(config, checkpoint)


def backbone_mean(name: str) -> tuple[float, float, float]:
    """The input mean of backbone ``name`` (linked to ``data.mean``)."""
    return backbone_stats(name)[0]


def backbone_std(name: str) -> tuple[float, float, float]:
    """The input standard deviation of backbone ``name`` (linked to ``data.std``)."""
    return backbone_stats(name)[1]


def _resolve_checkpoint(ckpt_path: str, trainer_config: Any) -> Path | None:
    """``ckpt_path`` as a file: ``last`` means ``last.ckpt`` in the ModelCheckpoint's ``dirpath``."""
    if ckpt_path not in ("last", "best", "hpc", "registry"):
        return Path(ckpt_path)
    if ckpt_path != "last":
        return None
    for callback in trainer_config.get("callbacks") or []:
        if "ModelCheckpoint" in str(callback.get("class_path", "")):
            dirpath = callback.get("init_args", {}).get("dirpath")
            if dirpath and (Path(dirpath) / "last.ckpt").is_file():
                return Path(dirpath) / "last.ckpt"
    return None


def continue_logger_runs(config: Any, checkpoint: dict[str, Any]) -> None:
    """Before the loggers are built for ``fit --ckpt_path``: give each logger the run id (version)
    that :class:`detector.callbacks.RunIdentity` saved in the checkpoint, so the resumed run writes
    to the same TensorBoard/CSV version and the same wandb run."""
    loggers = config.trainer.get("logger")
    if not isinstance(loggers, list):
        return
    state = checkpoint.get("callbacks", {})
    saved = next((v["loggers"] for k, v in state.items() if k.startswith("RunIdentity")), [])
    for logger, run in zip(loggers, saved):
        if not str(logger.get("class_path", "")).endswith(run["type"]) or run["version"] is None:
            continue
        if run["type"] == "WandbLogger":
            logger.init_args.update({"id": run["version"], "resume": "allow"})
        else:
            logger.init_args["version"] = run["version"]


def main(args: list[str] | None = None) -> DetectorCLI:
    return DetectorCLI(
        StagedModule,  # the task: DetectorModule, or a stepping stone of the lessons (YAML class_path)
        DetectionDataModule,
        subclass_mode_model=True,
        trainer_class=DetectorTrainer,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the module's discriminative groups + recipe schedule
        args=args,
    )


if __name__ == "__main__":
    main()
