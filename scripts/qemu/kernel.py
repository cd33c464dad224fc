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
  modules/      the requested modules plus everything they depend on;
  modules.order the insmod order, one name a line, dependencies first. Debian's packages ship
                no modules.dep, so the order comes from each .ko's `.modinfo` `depends=`;
                a requested module the package builds in (modules.builtin) is left out;
  busybox       the static busybox; kernel.version the package's file name.
Only the members named are extracted (a kernel package holds 100-350 MB of modules).
"""
import argparse
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib


def die(msg):
    print(f"error: kernel.py: {msg}", file=sys.stderr)
    raise SystemExit(1)


def deb_members(deb):
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
    # Listing through tar once: names only (`dpkg-deb -c` would do too, with more columns).
    names = subprocess.run(["tar", "-t"], input=out, capture_output=True, check=True).stdout
    return out, names.decode().split("\n")


def extract(tar_bytes, members, dest):
    if members:
        subprocess.run(["tar", "-x", "-C", dest] + sorted(members), input=tar_bytes, check=True)


def modname(path):
    """The kernel's name for a module: its file name without .ko, with '-' as '_'."""
    return os.path.basename(path)[:-3].replace("-", "_")


def modinfo_depends(ko):
    """The `depends=` of a .ko, read from its ELF `.modinfo` section (NUL-separated key=value)."""
    with open(ko, "rb") as f:
        elf = f.read()
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


def zimage_to_uimage(zimage, load, name):
    """Unpack an ARM zImage's xz payload and wrap the raw Image in a uImage header."""
    with open(zimage, "rb") as f:
        z = f.read()
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

    parent = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="kernel-", dir=parent)
    try:
        tar, names = deb_members(a.kernel_deb)
        kos = {modname(n): n for n in names if n.endswith(".ko")}
        builtin_list = [n for n in names if n.endswith("/modules.builtin")]
        vmlinuz = [n for n in names if os.path.basename(n).startswith("vmlinuz-")]
        dtbs = [n for n in names if a.dtb and os.path.basename(n) == a.dtb]
        if len(vmlinuz) != 1:
            die(f"{a.kernel_deb}: expected one boot/vmlinuz-*, found {vmlinuz}")
        if a.dtb and len(dtbs) != 1:
            die(f"{a.kernel_deb}: expected one {a.dtb}, found {dtbs}")
        extract(tar, vmlinuz + dtbs + builtin_list, tmp)
        builtin = set()
        for b in builtin_list:
            with open(os.path.join(tmp, b)) as f:
                builtin |= {modname(line.strip()) for line in f if line.strip()}

        # Dependency closure, one extraction pass per level, then a depth-first order.
        deps, todo = {}, [modname(m + ".ko") for m in a.modules]
        while todo:
            want = set()
            for m in todo:
                if m in deps:
                    continue
                if m in kos:
                    want.add(m)
                elif m in builtin:
                    deps[m] = None
                else:
                    die(f"module {m} is neither in {os.path.basename(a.kernel_deb)} nor built in")
            extract(tar, {kos[m] for m in want}, tmp)
            todo = []
            for m in want:
                deps[m] = modinfo_depends(os.path.join(tmp, kos[m]))
                todo += deps[m]
        order = []

        def visit(m):
            if deps[m] is None or m in order:
                return
            for d in deps[m]:
                visit(d)
            order.append(m)

        for m in a.modules:
            visit(modname(m + ".ko"))

        btar, bnames = deb_members(a.busybox_deb)
        extract(btar, [n for n in bnames if n == "./bin/busybox"], tmp)

        shutil.rmtree(a.out, ignore_errors=True)
        os.makedirs(os.path.join(a.out, "modules"))
        src = os.path.join(tmp, vmlinuz[0])
        if a.uimage:
            with open(os.path.join(a.out, "kernel"), "wb") as f:
                f.write(zimage_to_uimage(src, int(a.uimage, 0), os.path.basename(src)))
        else:
            shutil.copyfile(src, os.path.join(a.out, "kernel"))
        if a.dtb:
            shutil.copyfile(os.path.join(tmp, dtbs[0]), os.path.join(a.out, "board.dtb"))
        for m in order:
            shutil.copyfile(os.path.join(tmp, kos[m]), os.path.join(a.out, "modules", m + ".ko"))
        with open(os.path.join(a.out, "modules.order"), "w") as f:
            f.write("".join(m + "\n" for m in order))
        shutil.copyfile(os.path.join(tmp, "bin/busybox"), os.path.join(a.out, "busybox"))
        with open(os.path.join(a.out, "kernel.version"), "w") as f:
            f.write(os.path.basename(a.kernel_deb) + "\n")
        with open(stamp_file, "w") as f:
            f.write(stamp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
