#include "signing/signature.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "runtime/error.h"
#include "signing/encoding.h"

namespace galleon::signing {

using nlohmann::json;

bool is_bundle_id(std::string_view text) {
  constexpr std::string_view prefix = "sha256:";
  return text.substr(0, prefix.size()) == prefix && is_sha256_hex(text.substr(prefix.size()));
}

std::string signature_message(std::string_view bundle_id) {
  return std::string(kSignatureDomain) + std::string(bundle_id);
}

std::string Signature::to_json() const {
  json j = json::object();
  j["algorithm"] = "ed25519";
  j["bundle"] = bundle_id;
  j["format"] = std::string(kSignatureFormat);
  j["key"] = key_id;
  j["signature"] = base64_encode(std::string_view(reinterpret_cast<const char*>(signature.data()), signature.size()));
  return j.dump();  // std::map keys: sorted bytewise, compact
}

bool Signature::verify_with(const PublicKey& key) const {
  return key.key_id() == key_id && key.verify(signature_message(bundle_id), signature);
}

namespace {

json parse_json_object(std::string_view bytes, std::string_view origin) {
  if (bytes.size() > kMaxSignatureFile)
    throw Error(ErrorKind::Invalid, std::string(origin) + ": signature file larger than " +
                                        std::to_string(kMaxSignatureFile) + " bytes");
  json j = json::parse(bytes.begin(), bytes.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(ErrorKind::Invalid, std::string(origin) + ": not JSON");
  if (!j.is_object()) throw Error(ErrorKind::Invalid, std::string(origin) + ": expected a JSON object");
  if (j.dump() != bytes)
    throw Error(ErrorKind::Invalid, std::string(origin) + ": not canonical JSON (sorted keys, no whitespace)");
  return j;
}

std::string string_field(const json& j, const char* key, std::string_view origin) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    throw Error(ErrorKind::Invalid, std::string(origin) + ": field '" + key + "': expected a string");
  return it->get<std::string>();
}

}  // namespace

Signature parse_signature(std::string_view bytes, std::string_view origin) {
  json j = parse_json_object(bytes, origin);
  static const char* const kFields[] = {"algorithm", "bundle", "format", "key", "signature"};
  for (const auto& item : j.items()) {
    const std::string& key = item.key();  // not a structured binding: clang 14 cannot capture one
    if (std::find_if(std::begin(kFields), std::end(kFields), [&](const char* f) { return key == f; }) ==
        std::end(kFields))
      throw Error(ErrorKind::Invalid, std::string(origin) + ": unknown field '" + key + "'");
  }
  auto bad = [&](const std::string& field, const std::string& expected) {
    return Error(ErrorKind::Invalid, std::string(origin) + ": field '" + field + "': expected " + expected);
  };
  if (string_field(j, "format", origin) != kSignatureFormat) throw bad("format", std::string(kSignatureFormat));
  if (string_field(j, "algorithm", origin) != "ed25519") throw bad("algorithm", "ed25519");
  Signature sig;
  sig.bundle_id = string_field(j, "bundle", origin);
  if (!is_bundle_id(sig.bundle_id)) throw bad("bundle", "sha256:<64 lowercase hex digits>");
  sig.key_id = string_field(j, "key", origin);
  if (!is_key_id(sig.key_id)) throw bad("key", "16 lowercase hex digits");
  std::string raw = base64_decode(string_field(j, "signature", origin), std::string(origin) + ": field 'signature'");
  if (raw.size() != sig.signature.size()) throw bad("signature", "64 bytes of Ed25519 signature");
  std::copy(raw.begin(), raw.end(), sig.signature.begin());
  return sig;
}

Signature sign_bundle_id(const PrivateKey& key, std::string_view bundle_id) {
  if (!is_bundle_id(bundle_id))
    throw Error(ErrorKind::Usage, "'" + std::string(bundle_id) + "' is not a bundle id (sha256:<hex>)");
  Signature sig;
  sig.bundle_id = std::string(bundle_id);
  sig.key_id = key.key_id();
  sig.signature = key.sign(signature_message(bundle_id));
  return sig;
}

}  // namespace galleon::signing
