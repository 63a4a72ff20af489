"""The pure parts of tools/screenshots.py (the tool itself needs root, a namespace and Chromium: `make screenshots`)."""

from pathlib import Path

import av

from tests import chromium
from tools import screenshots
from tools.camera_clip import write_clip, y4m_header


def test_defaults_write_the_readme_screenshots_from_a_gateway_on_8080():
    args = screenshots.parse_args([])
    assert (args.out, args.port, args.scene_timeout, args.plain_camera) == (Path("docs/screenshots"), 8080, 30.0, False)
    assert screenshots.parse_args(["--out", "/tmp/x"]).out == Path("/tmp/x")


def test_emoji_font_is_found_by_its_file_or_by_fontconfig(tmp_path):
    font = tmp_path / "NotoColorEmoji.ttf"
    assert not screenshots.emoji_font_present(font, fc_list=lambda: "/x/DejaVuSans.ttf: DejaVu Sans:style=Book\n")
    assert screenshots.emoji_font_present(font, fc_list=lambda: "/y/Twemoji.ttf: Twitter Color Emoji:style=Regular\n")
    font.write_bytes(b"")
    assert screenshots.emoji_font_present(font, fc_list=lambda: "")


def test_a_missing_emoji_font_is_one_line_naming_the_package():
    reason = screenshots.unavailable(font_present=lambda: False)
    assert reason is not None and "\n" not in reason
    if chromium.unavailable() is None:  # otherwise the browser's absence is the first reason given
        assert "apt-get install fonts-noto-color-emoji" in reason


def test_the_camera_clip_is_raw_y4m_that_decodes_to_its_frames(tmp_path):
    path = write_clip(tmp_path / "c.y4m", title="Cherry", subtitle="test", colours=((255, 0, 0), (0, 0, 255)),
                      width=64, height=36, fps=10, seconds=0.3)
    data = path.read_bytes()
    header = y4m_header(64, 36, 10)
    assert data.startswith(header)
    assert len(data) == len(header) + 3 * (len(b"FRAME\n") + 64 * 36 * 3 // 2)
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert [(f.width, f.height) for f in frames] == [(64, 36)] * 3
    assert frames[0].to_ndarray(format="rgb24").mean() > 20, "not black"
