// The syntax tree of a parsed chat template (made by jinja_parser, walked by jinja_eval).
//
// One node struct per category with a kind tag keeps the tree small; which fields a kind uses is noted
// next to each kind. `line` is the 1-based source line for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/chat/jinja_value.h"

namespace tessera::chat::jinja {

enum class ExprKind {
  kLiteral,  // literal
  kName,     // name
  kList,     // children: items
  kTuple,    // children: items
  kDict,     // children: key, value, key, value, ...
  kAttr,     // children[0]: object; name: attribute
  kItem,     // children[0]: object, children[1]: index
  kSlice,    // children[0]: object, then start, stop, step (each may be null)
  kCall,     // children[0]: callee, rest: positional args; kwargs
  kFilter,   // children[0]: operand, rest: args; name; kwargs
  kTest,     // children[0]: operand, rest: args; name; negated
  kUnary,    // name: "-", "+" or "not"; children[0]: operand
  kBinary,   // name: + - * / // % ** ~ and or; children: left, right
  kCompare,  // children[0]: first operand, children[k+1]: operand of ops[k]
  kCond,     // children: then, condition, else (may be null): `then if condition else else`
};

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<std::unique_ptr<Expr>> children;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;
  // kCall/kFilter/kTest: f(..., *star_args, **star_kwargs) (either may be null).
  std::unique_ptr<Expr> star_args;
  std::unique_ptr<Expr> star_kwargs;
  // 1 + the tallest child: the parser keeps it below its limit, so evaluating or freeing any expression
  // recurses boundedly whatever the template ("((((..." 100k deep overflowed the stack before).
  int height = 1;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

enum class StmtKind {
  kText,        // text
  kOutput,      // expr
  kIf,          // branches (condition, body); else_body
  kFor,         // targets, expr (iterable), filter (may be null), body, else_body
  kSet,         // targets (one name, or several to unpack), or targets[0] + attr (namespace); expr
  kSetBlock,    // targets[0]; body
  kMacro,       // name, params, defaults (null where none), body
  kBreak,
  kContinue,
  kGeneration,  // body (transformers' {% generation %} marks assistant text; renders as its body)
  kCallBlock,   // expr (a call of a macro), params/defaults of `caller`, body (what caller() renders)
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::vector<std::string> targets;
  std::string attr;
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;
  bool uses_caller = false;  // kMacro: the body references `caller`
};

struct Program {
  Body body;
};

}  // namespace tessera::chat::jinja
