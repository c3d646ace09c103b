#include "runtime/backend.h"

#include <cstdlib>

#include "runtime/error.h"

namespace galleon {

Device parse_device(const std::string& text) {
  Device d;
  if (text == "cpu") return d;
  d.kind = Device::Kind::Cuda;
  if (text == "cuda") return d;
  const std::string prefix = "cuda:";
  const std::string num = text.rfind(prefix, 0) == 0 ? text.substr(prefix.size()) : "";
  if (!num.empty() && num.size() <= 4 && num.find_first_not_of("0123456789") == std::string::npos) {
    d.index = std::atoi(num.c_str());
    return d;
  }
  fail(ErrorKind::Usage, "--device " + text + ": expected cpu, cuda or cuda:N");
}

std::string device_name(const Device& d) {
  return d.kind == Device::Kind::Cpu ? "cpu" : "cuda:" + std::to_string(d.index);
}

}  // namespace galleon
