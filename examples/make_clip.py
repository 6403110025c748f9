"""Write a short video made from the example photos (a slow pan across each), for the demo:
python examples/make_clip.py OUT.mp4 [FRAMES_PER_PHOTO]"""

import sys
from pathlib import Path

import cv2

W, H = 480, 360
out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/clip.mp4")
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
out.parent.mkdir(parents=True, exist_ok=True)
vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 15, (W, H))
for path in sorted(Path(__file__).parent.glob("*.jpg")):
    img = cv2.imread(str(path))
    big = cv2.resize(img, (int(W * 1.3), int(H * 1.3)))
    for i in range(STEPS):
        x = int((big.shape[1] - W) * i / (STEPS - 1))
        y = int((big.shape[0] - H) * i / (STEPS - 1))
        vw.write(big[y : y + H, x : x + W])
vw.release()
print(out)
