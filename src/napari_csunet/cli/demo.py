"""``csunet demo``: the main job in one command.

With a display: napari opens with the plugin docked, a sample micrograph loaded and segmented by
the matching starter model, and the phase-fraction table filled in. Without one (``--headless``, or
no display found): the same segmentation is written to a folder (overlay PNG, label TIFF, CSV).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register", "SAMPLES", "has_display"]

#: sample name -> (napari sample key, shipped image file, starter model)
SAMPLES = {
    "superalloy": ("superalloy", "super1_spot2_0d_0.tif", "starter-superalloy"),
    "ebc": ("ebc", "ebc2_040617-2_S127-2-0015.tif", "starter-ebc"),
}


def has_display() -> bool:
    """True where a GUI can open (macOS/Windows always; X11/Wayland when their variables are set)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _starter_or_fallback(model: str) -> str:
    """The requested model if it resolves; the message says what to do if it does not."""
    from ..models.catalog import resolve_model

    try:
        resolve_model(model)
    except KeyError:
        raise SystemExit(
            f"csunet demo: model {model!r} not found. The starter models ship inside the package "
            "(napari_csunet/starter_models); reinstall napari-csunet, or pass --model FILE."
        ) from None
    return model


def _headless(sample: str, model: str, out: Path, device: str) -> int:
    from ..plugin.samples import DATA_DIR
    from .main import main as csunet

    image = DATA_DIR / SAMPLES[sample][1]
    out.mkdir(parents=True, exist_ok=True)
    code = csunet(["segment", str(image), "--model", model, "--out", str(out), "--device", device])
    if code == 0:
        stem = image.stem
        print(f"Segmented {image.name} with {model}. Wrote:")
        for name in (f"{stem}_overlay.png", f"{stem}_labels.tif", "summary.csv"):
            print(f"  {out / name}")
    return code


def _gui(sample: str, model: str, device: str) -> int:
    import napari

    from ..models.catalog import resolve_model

    viewer = napari.Viewer(title="napari-csunet demo")
    layers = viewer.open_sample("napari-csunet", SAMPLES[sample][0])
    _, widget = viewer.window.add_plugin_dock_widget("napari-csunet", "CS-UNet")
    if device != "auto":
        widget.model_panel.set_device(device)

    def segment() -> None:
        widget.session.changed.disconnect(segment)
        widget.segment_panel.segment([layers[0]], on_done=lambda _labels: show_table())

    def show_table() -> None:
        widget.tabs.setCurrentWidget(widget.tabs.widget(4))
        widget.inspect_panel.compute()

    widget.session.changed.connect(segment)
    kind, path = resolve_model(model)
    if kind == "file":
        widget.model_panel.open_file(str(path))
    else:
        widget.model_panel.select_preset(model)
        widget.model_panel.build_preset()
    napari.run()
    return 0


def _demo(args: argparse.Namespace) -> int:
    model = _starter_or_fallback(args.model or SAMPLES[args.sample][2])
    if args.headless or not has_display():
        if not args.headless:
            print("No display found: running headless (use --headless to say so explicitly).")
        return _headless(args.sample, model, Path(args.out), args.device)
    return _gui(args.sample, model, args.device)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="open napari on a sample micrograph segmented by a starter model",
                       description=__doc__)
    p.add_argument("--sample", choices=sorted(SAMPLES), default="superalloy", help="which sample micrograph")
    p.add_argument("--model", help="model file, starter model or preset (default: the sample's starter model)")
    p.add_argument("--headless", action="store_true", help="write files instead of opening napari")
    p.add_argument("--out", default="csunet-demo", help="output folder for --headless (default ./csunet-demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    p.set_defaults(func=_demo)
