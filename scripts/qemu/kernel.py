#!/usr/bin/env python3
"""Take what a QEMU boot needs out of Debian's own packages, without installing them.
Called by scripts/qemu-boot (and so scripts/qemu-pi), which downloads the .debs.

    kernel.py --kernel-deb linux-image-6.1.0-N-arm64_..._arm64.deb \
              --busybox-deb busybox-static_..._arm64.deb --out DIR \
              [--uimage 0x8000] [--dtb bcm2837-rpi-3-b.dtb] --modules dwc2 cdc_ether ...

Writes into DIR (and does nothing when DIR/stamp says it was done for the same inputs):
  kernel        what `-kernel` gets: the package's vmlinuz as it is (arm64: a raw Image), or
                with --uimage ADDR the raw Image unpacked from the 32-bit zImage's xz payload
                and wrapped in a U-Boot uImage header that loads it at ADDR (QEMU then skips
                the in-guest decompression, ~15 s under emulation; the address is the
                kernel's TEXT_OFFSET: 0x8000 for `rpi`, 0x208000 for `armmp`);
  board.dtb     the named device tree, unchanged (the caller patches its copy);
  modules/      the requested modules plus everything they depend on, uncompressed (Debian's
                6.12 packages ship them xz-compressed, `.ko.xz`; busybox insmod wants `.ko`);
  modules.order the insmod order, one name a line, dependencies first. Debian's packages ship
                no modules.dep, so the order comes from each .ko's `.modinfo` `depends=`;
                a requested module the package builds in (modules.builtin) is left out;
  busybox       the static busybox; kernel.version the package's file name.
The package is read in memory and only the members named are written out (a kernel package
holds 100-350 MB of modules).
"""
import argparse
import io
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib


def die(msg):
    print(f"error: kernel.py: {msg}", file=sys.stderr)
    raise SystemExit(1)


class Deb:
    """The data part of a .deb, read once into memory; members read by name, no extraction."""

    def __init__(self, path):
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", path], capture_output=True, check=True).stdout
        self.tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        self.names = self.tar.getnames()

    def read(self, name):
        f = self.tar.extractfile(name)
        if f is None:
            die(f"{name} is not a regular file in the package")
        data = f.read()
        return lzma.decompress(data, lzma.FORMAT_XZ) if name.endswith(".ko.xz") else data


def modname(path):
    """The kernel's name for a module: its file name without .ko (or .ko.xz), with '-' as '_'."""
    base = os.path.basename(path)
    return base[:base.rindex(".ko")].replace("-", "_")


def is_module(path):
    return path.endswith(".ko") or path.endswith(".ko.xz")


def modinfo_depends(ko, elf):
    """The `depends=` of a .ko, read from its ELF `.modinfo` section (NUL-separated key=value)."""
    if elf[:4] != b"\x7fELF":
        die(f"{ko} is not an ELF file")
    bits64, order = elf[4] == 2, "<" if elf[5] == 1 else ">"
    if bits64:
        shoff, = struct.unpack_from(order + "Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x3A)
    else:
        shoff, = struct.unpack_from(order + "I", elf, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", elf, 0x2E)

    def section(i):
        base = shoff + i * shentsize
        if bits64:
            name, = struct.unpack_from(order + "I", elf, base)
            off, size = struct.unpack_from(order + "QQ", elf, base + 0x18)
        else:
            name, = struct.unpack_from(order + "I", elf, base)
            off, size = struct.unpack_from(order + "II", elf, base + 0x10)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = elf.index(b"\0", stroff + name)
        if elf[stroff + name:end] == b".modinfo":
            for kv in elf[off:off + size].split(b"\0"):
                if kv.startswith(b"depends="):
                    return [modname(d + ".ko") for d in kv[8:].decode().split(",") if d]
            return []
    die(f"{ko} has no .modinfo section")


def zimage_to_uimage(zimage, z, load, name):
    """Unpack an ARM zImage's xz payload and wrap the raw Image in a uImage header."""
    # The decompressor's code holds the xz magic too: take the first match that unpacks.
    raw, start = None, z.find(b"\xfd7zXZ\x00")
    while raw is None and start >= 0:
        d = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        try:
            raw = d.decompress(z[start:])
            if not d.eof:
                raw = None
        except lzma.LZMAError:
            pass
        start = z.find(b"\xfd7zXZ\x00", start + 1)
    if raw is None:
        die(f"{zimage}: no xz payload that unpacks (only xz-compressed zImages are handled)")
    # Legacy uImage header (include/image.h in U-Boot): big-endian, 64 bytes, two CRC32s.
    # os=5 Linux, arch=2 ARM, type=2 kernel, comp=0 none; load = entry = ADDR; time 0.
    fields = [0x27051956, 0, 0, len(raw), load, load, zlib.crc32(raw), 5, 2, 2, 0, name.encode()[:32]]
    hdr = struct.pack(">7I4B32s", *fields)
    fields[1] = zlib.crc32(hdr)
    return struct.pack(">7I4B32s", *fields) + raw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel-deb", required=True)
    ap.add_argument("--busybox-deb", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--uimage", help="load address (e.g. 0x8000): unpack the zImage into a uImage")
    ap.add_argument("--dtb", help="file name of the device tree in the package")
    ap.add_argument("--modules", nargs="*", default=[], help="modules to load (dependencies are added)")
    a = ap.parse_args()
    stamp = repr((os.path.basename(a.kernel_deb), os.path.basename(a.busybox_deb), a.uimage, a.dtb, a.modules))
    stamp_file = os.path.join(a.out, "stamp")
    try:
        with open(stamp_file) as f:
            if f.read() == stamp:
                return
    except FileNotFoundError:
        pass

    kdeb = Deb(a.kernel_deb)
    kos = {modname(n): n for n in kdeb.names if is_module(n)}
    vmlinuz = [n for n in kdeb.names if os.path.basename(n).startswith("vmlinuz-")]
    dtbs = [n for n in kdeb.names if a.dtb and os.path.basename(n) == a.dtb]
    if len(vmlinuz) != 1:
        die(f"{a.kernel_deb}: expected one boot/vmlinuz-*, found {vmlinuz}")
    if a.dtb and len(dtbs) != 1:
        die(f"{a.kernel_deb}: expected one {a.dtb}, found {dtbs}")
    builtin = set()
    for n in kdeb.names:
        if n.endswith("/modules.builtin"):
            builtin |= {modname(line) for line in kdeb.read(n).decode().split() if line}

    # Dependency closure, then a depth-first order (dependencies first).
    deps, todo = {}, [modname(m + ".ko") for m in a.modules]
    while todo:
        m = todo.pop()
        if m in deps:
            continue
        if m in kos:
            deps[m] = modinfo_depends(kos[m], kdeb.read(kos[m]))
            todo += deps[m]
        elif m in builtin:
            deps[m] = None
        else:
            die(f"module {m} is neither in {os.path.basename(a.kernel_deb)} nor built in")
    order = []

    def visit(m):
        if deps[m] is None or m in order:
            return
        for d in deps[m]:
            visit(d)
        order.append(m)

    for m in a.modules:
        visit(modname(m + ".ko"))

    busybox = Deb(a.busybox_deb).read("./bin/busybox")
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(os.path.join(a.out, "modules"))

    def write(name, data):
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)

    image = kdeb.read(vmlinuz[0])
    if a.uimage:
        image = zimage_to_uimage(vmlinuz[0], image, int(a.uimage, 0), os.path.basename(vmlinuz[0]))
    write("kernel", image)
    if a.dtb:
        write("board.dtb", kdeb.read(dtbs[0]))
    for m in order:
        write(f"modules/{m}.ko", kdeb.read(kos[m]))
    write("modules.order", "".join(m + "\n" for m in order).encode())
    write("busybox", busybox)
    write("kernel.version", (os.path.basename(a.kernel_deb) + "\n").encode())
    write("stamp", stamp.encode())


if __name__ == "__main__":
    main()
