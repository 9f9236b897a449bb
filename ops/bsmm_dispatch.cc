// ISA selection of the block-sparse products (see bsmm_dispatch.h). Compiled with the configured
// flags only: it runs on any x86-64 CPU to find out which variant may run.
#include "bsmm_dispatch.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dynsparse {
namespace {

constexpr int kNoIsa = -1;

bool CpuHas(int isa) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == 0) return avx2;
  return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

int IsaIndex(const std::string& name) {
  for (int i = 0; i < 2; ++i) {
    if (name == kIsaNames[i]) return i;
  }
  return kNoIsa;
}

struct Selection {
  std::atomic<int> isa{kNoIsa};
  absl::Status error;  // why no variant could be chosen at load time
};

Selection& Current() {
  static Selection* selection = [] {
    auto* s = new Selection;
    const std::vector<std::string> supported = SupportedIsas();
    const char* forced = std::getenv("DYNSPARSE_ISA");
    if (forced != nullptr && *forced != '\0' && std::string(forced) != "auto") {
      const int index = IsaIndex(forced);
      if (index == kNoIsa) {
        s->error = absl::InvalidArgumentError(
            absl::StrCat("DYNSPARSE_ISA=", forced, " is not a variant of the dynsparse ops; use ",
                         "avx2, avx512 or auto (or unset it)."));
      } else if (!CpuHas(index)) {
        s->error = absl::FailedPreconditionError(absl::StrCat(
            "DYNSPARSE_ISA=", forced, " but this CPU does not support it (supported: ",
            supported.empty() ? "none" : absl::StrJoin(supported, ", "),
            "). Unset DYNSPARSE_ISA or pick a supported variant."));
      } else {
        s->isa = index;
      }
    } else if (!supported.empty()) {
      s->isa = IsaIndex(supported.back());
    } else {
      s->error = absl::FailedPreconditionError(
          "the dynsparse ops need a CPU with AVX2 and FMA (x86-64 from 2013 on); this one has "
          "neither.");
    }
    return s;
  }();
  return *selection;
}

}  // namespace

std::vector<std::string> SupportedIsas() {
  std::vector<std::string> names;
  for (int i = 0; i < 2; ++i) {
    if (CpuHas(i)) names.emplace_back(kIsaNames[i]);
  }
  return names;
}

absl::Status ActiveIsa(std::string* name) {
  Selection& s = Current();
  const int isa = s.isa.load(std::memory_order_acquire);
  if (isa == kNoIsa) return s.error;
  *name = kIsaNames[isa];
  return absl::OkStatus();
}

absl::Status SelectIsa(const std::string& name) {
  const int index = IsaIndex(name);
  if (index == kNoIsa || !CpuHas(index)) {
    const std::vector<std::string> supported = SupportedIsas();
    return absl::InvalidArgumentError(absl::StrCat(
        "BsmmIsa: cannot select '", name, "'; this CPU supports: ",
        supported.empty() ? "none" : absl::StrJoin(supported, ", "), "."));
  }
  Current().isa.store(index, std::memory_order_release);
  return absl::OkStatus();
}

template <typename T>
absl::Status ActiveTable(const KernelTable<T>** table) {
  Selection& s = Current();
  switch (s.isa.load(std::memory_order_acquire)) {
    case 0:
      *table = &avx2::Table<T>();
      return absl::OkStatus();
    case 1:
      *table = &avx512::Table<T>();
      return absl::OkStatus();
    default:
      return s.error;
  }
}

template absl::Status ActiveTable<float>(const KernelTable<float>** table);
template absl::Status ActiveTable<double>(const KernelTable<double>** table);

}  // namespace dynsparse
