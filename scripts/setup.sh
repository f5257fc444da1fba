#!/usr/bin/env bash
# Installs what building Enclave needs on a fresh Debian/Ubuntu machine: a C/C++ toolchain, cmake
# (llama.cpp) and libclang (bindgen). Does nothing when they are already there.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# bindgen loads libclang itself (libclang.so or libclang-NN.so), not libclang-cpp.
have_libclang=no
for pattern in '/usr/lib/llvm-*/lib/libclang.so*' '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' \
  '/usr/lib/*/libclang.so*' '/usr/lib/*/libclang-[0-9]*.so*'; do
  if compgen -G "$pattern" >/dev/null; then have_libclang=yes; fi
done
if [ "$have_libclang" = no ]; then
  need+=(libclang-dev)
fi
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust from rustup first" >&2; exit 1; }
