#include "pkg/sqlite.h"

#include <sqlite3.h>

#include "runtime/error.h"

namespace galleon::pkg::sql {

Db::Db(const std::string& path) : path_(path) {
  int rc = sqlite3_open_v2(path.c_str(), &db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    galleon::fail(ErrorKind::Io, path + ": cannot open the store database: " + msg);
  }
  sqlite3_extended_result_codes(db_, 1);
}

Db::~Db() { sqlite3_close(db_); }

void Db::fail(std::string_view what) const {
  galleon::fail(ErrorKind::Io, path_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_));
}

void Db::exec(std::string_view sql) {
  std::string text(sql);
  if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
    fail("cannot run \"" + text + "\"");
}

Stmt::Stmt(Db& db, std::string_view sql) : db_(db), sql_(sql) {
  if (sqlite3_prepare_v2(db.handle(), sql_.data(), int(sql_.size()), &stmt_, nullptr) !=
      SQLITE_OK)
    db.fail("cannot prepare \"" + sql_ + "\"");
}

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

Stmt& Stmt::bind(int index, std::string_view text) {
  if (sqlite3_stmt_busy(stmt_)) sqlite3_reset(stmt_);
  if (sqlite3_bind_text(stmt_, index, text.data(), int(text.size()), SQLITE_TRANSIENT) !=
      SQLITE_OK)
    db_.fail("cannot bind parameter " + std::to_string(index) + " of \"" + sql_ + "\"");
  return *this;
}

Stmt& Stmt::bind_blob(int index, std::string_view bytes) {
  if (sqlite3_stmt_busy(stmt_)) sqlite3_reset(stmt_);
  if (sqlite3_bind_blob(stmt_, index, bytes.data(), int(bytes.size()), SQLITE_TRANSIENT) !=
      SQLITE_OK)
    db_.fail("cannot bind parameter " + std::to_string(index) + " of \"" + sql_ + "\"");
  return *this;
}

Stmt& Stmt::bind(int index, int64_t value) {
  if (sqlite3_stmt_busy(stmt_)) sqlite3_reset(stmt_);
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK)
    db_.fail("cannot bind parameter " + std::to_string(index) + " of \"" + sql_ + "\"");
  return *this;
}

void Stmt::fail_step(int rc) const {
  (void)rc;
  db_.fail("\"" + sql_ + "\" failed");
}

bool Stmt::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) {
    sqlite3_reset(stmt_);
    return false;
  }
  sqlite3_reset(stmt_);
  fail_step(rc);
}

void Stmt::run() {
  while (step()) {
  }
}

std::string Stmt::text(int column) const {
  const unsigned char* p = sqlite3_column_text(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  return p ? std::string(reinterpret_cast<const char*>(p), size_t(n)) : std::string();
}

std::string Stmt::blob(int column) const {
  const void* p = sqlite3_column_blob(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  return p ? std::string(static_cast<const char*>(p), size_t(n)) : std::string();
}

int64_t Stmt::integer(int column) const { return sqlite3_column_int64(stmt_, column); }

Transaction::Transaction(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
  if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace galleon::pkg::sql
