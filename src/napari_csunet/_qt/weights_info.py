"""What the model panel says about a preset's weight sources: cached, will download, or (offline)
the URL and the exact path to drop the file at. Reads the weights registry; never downloads."""

from __future__ import annotations

__all__ = ["source_status"]


def source_status(preset: str, cnn: str | None, swin: str | None, allow_download: bool) -> tuple[list[str], bool]:
    """(one line per chosen source, whether every chosen source can be used now)."""
    from ..models.registry import get_preset
    from ..weights import WeightsError, cached_file, download_path, get_source, source_id_for

    config = get_preset(preset).config
    lines, ready = [], True
    for kind, family in (("cnn", cnn), ("swin", swin)):
        if not family:
            continue
        try:
            src = get_source(source_id_for(kind, family, cnn=config.cnn,
                                           swin_depths=config.swin.depths if config.swin else None))
        except WeightsError as exc:
            lines.append(f"{kind.upper()}: {exc}")
            ready = False
            continue
        found = cached_file(src)
        if found is not None:
            lines.append(f"{kind.upper()} {src.id}: cached ({found})")
        elif allow_download and not src.manual_download:
            lines.append(f"{kind.upper()} {src.id}: will download from {src.url}")
        else:
            how = ("needs a manual download (Google Drive)" if src.manual_download else
                   "not downloaded yet: tick 'download missing weights', or")
            lines.append(f"{kind.upper()} {src.id}: {how} get {src.url} and save it as {download_path(src)}")
            ready = False
    return lines, ready
