#!/usr/bin/env bash
# tools/shot.sh OUT.png [--wait SECONDS] [--size WxH] [--keys "KEY ..."] [--wm openbox|none] -- COMMAND [ARG...]
# A screenshot of COMMAND as a user sees it on a real X11 desktop: a virtual screen (Xvfb) with a real
# window manager (openbox, from Debian's packages: title bars, frames, the screen's work area), COMMAND
# started on it, optional keys typed into the focused window (xdotool names: Right, Down, b, shift+L ...),
# then the whole screen saved to OUT.png and COMMAND ended.  Open the PNG with an image viewer.
# Based on ../shared/tools/shot.sh, which has no window manager (a Qt window there has no title bar, so
# a frame that does not fit the screen is not seen).  Installs what is missing with apt-get.
set -euo pipefail
out=${1:?usage: shot.sh OUT.png [--wait S] [--size WxH] [--keys "K ..."] [--wm openbox|none] -- COMMAND...}; shift
wait_s=8 size=1280x720 keys="" wm=openbox
while [[ $# -gt 0 && $1 != -- ]]; do
  case $1 in
    --wait) wait_s=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --wm) wm=$2; shift 2 ;;
    *) echo "shot.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ ${1:-} == -- ]] && shift
[[ $# -gt 0 ]] || { echo "shot.sh: no command given" >&2; exit 2; }
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xdotool >/dev/null || need+=(xdotool)
command -v import >/dev/null || need+=(imagemagick)
[[ $wm == none ]] || command -v "$wm" >/dev/null || need+=("$wm")
ldconfig -p | grep -q libxcb-icccm.so.4 || need+=(libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0)
if [[ ${#need[@]} -gt 0 ]]; then
  echo "shot.sh: installing ${need[*]}" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
disp=:$(( (RANDOM % 400) + 500 ))
Xvfb "$disp" -screen 0 "${size}x24" -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
pids=("$xvfb")
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
sleep 1
if [[ $wm != none ]]; then
  DISPLAY=$disp "$wm" >/dev/null 2>&1 &
  pids+=($!)
  sleep 1
fi
DISPLAY=$disp QT_QPA_PLATFORM=xcb "$@" &
app=$!
pids+=("$app")
sleep "$wait_s"
if ! kill -0 "$app" 2>/dev/null; then
  wait "$app"; rc=$?
  echo "shot.sh: the command exited (status $rc) before the screenshot" >&2
fi
if [[ -n $keys ]]; then
  for k in $keys; do
    if [[ $k == sleep:* ]]; then sleep "${k#sleep:}"; continue; fi
    DISPLAY=$disp xdotool key "$k"; sleep 0.4
  done
  sleep 1.5
fi
DISPLAY=$disp import -window root "$out"
echo "shot.sh: wrote $out"
kill "$app" 2>/dev/null || true
wait "$app" 2>/dev/null || true
