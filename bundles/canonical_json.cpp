#include "bundles/canonical_json.h"

#include "runtime/error.h"

namespace galleon::bundles {

using nlohmann::json;

namespace {

// Finds the first float inside `value`; `where` receives its path, e.g. "defaults.temperature".
bool find_float(const json& value, std::string& where) {
  if (value.is_number_float()) return true;
  if (value.is_object()) {
    for (const auto& [key, child] : value.items()) {
      std::string below;
      if (find_float(child, below)) {
        where = below.empty() ? key : key + '.' + below;
        return true;
      }
    }
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      std::string below;
      if (find_float(value[i], below)) {
        where = '[' + std::to_string(i) + ']';
        if (!below.empty()) where += '.' + below;
        return true;
      }
    }
  }
  return false;
}

}  // namespace

std::string canonical_dump(const json& value) {
  std::string where;
  if (find_float(value, where))
    throw Error(ErrorKind::Invalid, "canonical JSON holds integers only; '" + where + "' is a float");
  try {
    // nlohmann's object_t is a std::map<std::string, ...>: keys come out sorted bytewise.
    return value.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    throw Error(ErrorKind::Invalid, std::string("canonical JSON: ") + e.what());
  }
}

json parse_canonical(std::string_view bytes, std::string_view origin) {
  json value = json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) throw Error(ErrorKind::Invalid, std::string(origin) + ": not valid JSON");
  std::string again = with_context(origin, [&] { return canonical_dump(value); });
  if (again != bytes) {
    size_t at = 0;
    while (at < again.size() && at < bytes.size() && again[at] == bytes[at]) ++at;
    throw Error(ErrorKind::Invalid, std::string(origin) +
                                        ": not canonical JSON (keys sorted, no whitespace, integers "
                                        "only, minimal escapes, no duplicate keys); first difference at byte " +
                                        std::to_string(at));
  }
  return value;
}

bool is_canonical(std::string_view bytes) {
  try {
    parse_canonical(bytes, "");
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace galleon::bundles
