// pkg: small RAII wrappers over the SQLite C API (one connection, prepared statements,
// transactions). Every failure is Error(Io) naming the database and the statement.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace galleon::pkg::sql {

class Db;

// A prepared statement; reset and re-bound for each use. Columns are 0-based, bind indexes 1-based.
class Stmt {
 public:
  Stmt(Db& db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int index, std::string_view text);
  Stmt& bind_blob(int index, std::string_view bytes);
  Stmt& bind(int index, int64_t value);
  // True while a row is available; false when done.
  bool step();
  // Runs a statement that returns no rows.
  void run();

  std::string text(int column) const;
  std::string blob(int column) const;
  int64_t integer(int column) const;

 private:
  [[noreturn]] void fail_step(int rc) const;
  Db& db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
};

class Db {
 public:
  // Opens (creating when missing) the database file.
  explicit Db(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }
  // Runs one or more statements that return no rows.
  void exec(std::string_view sql);
  // "<path>: <what>: <sqlite message>"
  [[noreturn]] void fail(std::string_view what) const;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// BEGIN IMMEDIATE (takes the write lock at once); rolls back unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Db& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace galleon::pkg::sql
