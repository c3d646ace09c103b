// Tokenizers built from GGUF metadata (tokenizer.ggml.*): "llama" (SentencePiece-style BPE with
// scores and byte fallback), "gpt2" (byte-level BPE with merges and the pre-tokenizers named by
// tokenizer.ggml.pre), "bert" (WordPiece) and "t5" (SentencePiece unigram). Behaviour:
// docs/tokenizers.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace galleon {

class GgufFile;

using TokenId = int32_t;

// tokenizer.ggml.token_type values.
enum class TokenAttr : int32_t {
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

class Tokenizer {
 public:
  // Builds from metadata. Error(Invalid) naming the file and key on inconsistent metadata,
  // Error(Unsupported) for an unknown tokenizer.ggml.model or tokenizer.ggml.pre.
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);
  virtual ~Tokenizer() = default;

  // Text -> ids. add_bos: prepend BOS when the vocabulary says so (tokenizer.ggml.add_bos_token,
  // default true for "llama" and "bert", false for "gpt2" and "t5"; "bert" then also appends
  // [SEP]; add_bos also appends EOS where the vocabulary asks for it, by default for "t5").
  // Error(Invalid) only where a "t5" vocabulary's character map is corrupt where the text
  // leads its walk (docs/tokenizers.md).
  // parse_special: text of control tokens becomes those tokens; otherwise it is plain text
  // (user-defined tokens are always matched).
  virtual std::vector<TokenId> encode(std::string_view text, bool add_bos,
                                      bool parse_special) const = 0;
  // Id -> the bytes it stands for (byte tokens become their byte, "▁" a space in llama vocabs,
  // byte-level characters their bytes in gpt2 vocabs). Control tokens give "".
  virtual std::string piece(TokenId id) const = 0;
  // Decodes a sequence; for llama vocabs a leading space produced by the space prefix of the
  // first token is kept as is (streaming-friendly: decode(a+b) == decode(a)+decode(b)).
  std::string decode(const std::vector<TokenId>& ids) const;

  int32_t n_vocab() const { return int32_t(tokens_.size()); }
  const std::string& token_text(TokenId id) const { return tokens_.at(size_t(id)); }
  TokenAttr attr(TokenId id) const { return attrs_.at(size_t(id)); }
  TokenId bos() const { return bos_; }  // -1 when none
  TokenId eos() const { return eos_; }  // -1 when none
  bool add_bos_default() const { return add_bos_; }
  // True for EOS and other end-of-generation tokens (tokenizer.ggml.eot_token_id, eom).
  bool is_end_of_generation(TokenId id) const;
  const std::string& model_name() const { return model_; }
  const std::string& pre_name() const { return pre_; }

 protected:
  Tokenizer() = default;
  std::vector<std::string> tokens_;
  std::vector<TokenAttr> attrs_;
  std::vector<TokenId> end_ids_;
  TokenId bos_ = -1;
  TokenId eos_ = -1;
  bool add_bos_ = false;
  std::string model_;
  std::string pre_;
};

}  // namespace galleon
