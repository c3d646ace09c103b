// Keys, trust and signing:
//   galleon key generate NAME [--dir DIR]
//   galleon trust add PUBFILE | list [--json] | remove KEYID
//   galleon sign BUNDLE --key KEYFILE
#include <iostream>
#include <memory>

#include "bundles/reader.h"
#include "bundles/writer.h"
#include "pkg/cli/command.h"
#include "pkg/home.h"
#include "signing/keys.h"
#include "signing/signature.h"
#include "signing/trust.h"

namespace galleon::cli {
namespace {

// The trust store of GALLEON_HOME; `create` makes the home's folders first (for add).
signing::TrustStore home_trust_store(bool create = false) {
  pkg::Home home = pkg::home_from_env();
  if (create) pkg::ensure_home(home);
  return signing::TrustStore(home.trust());
}

void setup_key(CLI::App& root) {
  CLI::App* key = root.add_subcommand("key", "Manage signing keys");
  key->require_subcommand(1);
  struct Args {
    std::string name, dir = ".";
  };
  auto a = std::make_shared<Args>();
  CLI::App* gen = key->add_subcommand("generate", "Write NAME.key (0600) and NAME.pub");
  gen->add_option("NAME", a->name, "Key name (file names and comment)")->required();
  gen->add_option("--dir", a->dir, "Folder for the key files (default: current folder)");
  gen->callback([a] {
    signing::KeyFiles k = signing::generate_key_files(a->dir, a->name);
    std::cerr << "wrote " << k.private_path << " (keep it secret) and " << k.public_path << "\n";
    std::cout << k.public_key.key_id() << "\n";
  });
}

void print_keys(const std::vector<signing::PublicKey>& keys, bool json) {
  if (!json) {
    for (const auto& k : keys) std::cout << k.key_id() << " " << k.comment << "\n";
    return;
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& k : keys) out.push_back({{"key", k.key_id()}, {"comment", k.comment},
                                            {"public_key", k.to_line().substr(0, k.to_line().size() - 1)}});
  std::cout << out.dump() << "\n";
}

void setup_trust(CLI::App& root) {
  CLI::App* trust = root.add_subcommand("trust", "Manage the trusted keys of this store");
  trust->require_subcommand(1);
  auto pub = std::make_shared<std::string>();
  CLI::App* add = trust->add_subcommand("add", "Trust a public key file");
  add->add_option("PUBFILE", *pub, "Public key file (NAME.pub)")->required();
  add->callback([pub] {
    signing::PublicKey k = home_trust_store(true).add_file(*pub);
    std::cout << k.key_id() << "\n";
    std::cerr << "trusted key " << k.key_id() << " (" << k.comment << ")\n";
  });
  auto json = std::make_shared<bool>(false);
  CLI::App* list = trust->add_subcommand("list", "List the trusted keys");
  list->add_flag("--json", *json, "Print a JSON array");
  list->callback([json] { print_keys(home_trust_store().list(), *json); });
  auto id = std::make_shared<std::string>();
  CLI::App* remove = trust->add_subcommand("remove", "Stop trusting a key");
  remove->add_option("KEYID", *id, "Key id (16 hex digits)")->required();
  remove->callback([id] {
    home_trust_store().remove(*id);
    std::cerr << "key " << *id << " is no longer trusted\n";
  });
}

void setup_sign(CLI::App& root) {
  struct Args {
    std::string bundle, key;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sign = root.add_subcommand("sign", "Add a signature to a bundle (its id is unchanged)");
  sign->add_option("BUNDLE", a->bundle, "Bundle file")->required();
  sign->add_option("--key", a->key, "Private key file")->required();
  sign->callback([a] {
    signing::PrivateKey key = signing::PrivateKey::load(a->key);
    std::string id = bundles::BundleReader(a->bundle).id();
    bundles::add_signature(a->bundle, signing::sign_bundle_id(key, id));
    std::cerr << "signed " << a->bundle << " with key " << key.key_id() << "\n";
    std::cout << id << "\n";
  });
}

const Registration reg_key{"key", [](CLI::App& root, Context&) { setup_key(root); }};
const Registration reg_trust{"trust", [](CLI::App& root, Context&) { setup_trust(root); }};
const Registration reg_sign{"sign", [](CLI::App& root, Context&) { setup_sign(root); }};

}  // namespace
}  // namespace galleon::cli
