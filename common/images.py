"""Which files are images: what OpenCV's imread decodes (opencv-python-headless 4.10). The device's folder
source and the training side's data set reader take the same list."""

IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".bmp",
    ".dib",
    ".webp",
    ".tif",
    ".tiff",
    ".jp2",
    ".pbm",
    ".pgm",
    ".ppm",
    ".pnm",
    ".pxm",
    ".pfm",
    ".sr",
    ".ras",
    ".hdr",
    ".pic",
)
