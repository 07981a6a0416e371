// Recursive-descent parser of chat templates; grammar and refusals in jinja_parser.h.
#include "core/chat/jinja_parser.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/chat/jinja_builtins.h"
#include "core/chat/jinja_lexer.h"
#include "core/util/status_macros.h"

namespace tessera::chat::jinja {
namespace {

// Templates never come near these (transformers' run under Python's recursion limit of 1000 frames);
// they bound the recursion of parsing, evaluating and freeing a template on an 8 MB stack.
constexpr int kMaxParseDepth = 400;  // guarded frames: about 4 per level of parentheses
constexpr int kMaxExprHeight = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  absl::StatusOr<std::unique_ptr<Program>> Run() {
    auto program = std::make_unique<Program>();
    std::string end;
    RETURN_IF_ERROR(ParseBody({}, &program->body, &end));
    if (too_tall_line_ > 0) {
      return Error(too_tall_line_, absl::StrCat("expression nested too deeply (more than ", kMaxExprHeight, " levels)"));
    }
    for (const auto& [name, line] : called_) {
      if (IsSupportedGlobal(name) || defined_.count(name)) continue;
      if (name == "caller") continue;  // bound inside macros called from {% call %}; else Undefined
      if (name == "cycler" || name == "joiner" || name == "lipsum") {
        return Error(line, absl::StrCat("unsupported global function '", name, "'"));
      }
      return Error(line, absl::StrCat("unsupported function '", name, "' (not a known global or a macro of this template)"));
    }
    return program;
  }

 private:
  static absl::Status Error(int line, const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", std::string(msg)));
  }
  absl::Status ErrorHere(const std::string& msg) const { return Error(Cur().line, msg); }

  const Token& Cur() const { return t_[pos_]; }
  const Token& Peek(size_t k = 1) const { return t_[std::min(pos_ + k, t_.size() - 1)]; }
  bool IsOp(std::string_view op) const { return Cur().type == Tok::kOp && Cur().text == op; }
  bool IsName(std::string_view n) const { return Cur().type == Tok::kName && Cur().text == n; }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool SkipName(std::string_view n) {
    if (!IsName(n)) return false;
    ++pos_;
    return true;
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Tok::kData: return "template text";
      case Tok::kVarBegin: return "'{{'";
      case Tok::kVarEnd: return "'}}'";
      case Tok::kBlockBegin: return "'{%'";
      case Tok::kBlockEnd: return "'%}'";
      case Tok::kEof: return "end of template";
      case Tok::kString: return "string literal";
      default: return "'" + t.text + "'";
    }
  }
  absl::Status ExpectOp(std::string_view op) {
    if (SkipOp(op)) return absl::OkStatus();
    return ErrorHere(absl::StrCat("expected '", std::string(op), "', found ", Describe(Cur())));
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().type == Tok::kBlockEnd) {
      ++pos_;
      return absl::OkStatus();
    }
    return ErrorHere(absl::StrCat("expected '%}', found ", Describe(Cur())));
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Cur().type != Tok::kName) return ErrorHere(absl::StrCat("expected a name, found ", Describe(Cur())));
    return t_[pos_++].text;
  }

  ExprPtr Node(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // Appends `child` to parent->children, keeping every expression below kMaxExprHeight: a taller child
  // is replaced by a literal and remembered (Run fails), so no tree built here recurses deeply when it
  // is evaluated or freed, even after an error part-way ("1+1+...+1 +").
  void Attach(Expr* parent, ExprPtr child) {
    if (child && child->height >= kMaxExprHeight) {
      if (too_tall_line_ == 0) too_tall_line_ = std::max(1, parent->line);
      child = Node(ExprKind::kLiteral, parent->line);
    }
    if (child) parent->height = std::max(parent->height, child->height + 1);
    parent->children.push_back(std::move(child));
  }

  // Bounds the parser's own recursion (nested parentheses, "not not ...", "- - ...", nested blocks).
  struct DepthGuard {
    explicit DepthGuard(int* depth) : depth(depth) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };
  absl::Status TooDeep() const {
    return ErrorHere(absl::StrCat("template nested too deeply (more than ", kMaxParseDepth, " levels)"));
  }

  // Parses statements until one of `ends` (a tag name) opens a block tag; consumes that tag's name and
  // stores it in *end (the caller parses the rest of that tag). With no ends, runs to the end of input.
  absl::Status ParseBody(const std::vector<std::string>& ends, Body* body, std::string* end) {
    while (true) {
      const Token& tok = Cur();
      if (tok.type == Tok::kEof) {
        if (ends.empty()) return absl::OkStatus();
        return ErrorHere(absl::StrCat("unexpected end of template: expected '{% ", ends.back(), " %}'"));
      }
      if (tok.type == Tok::kData) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kText;
        s->line = tok.line;
        s->text = tok.text;
        body->push_back(std::move(s));
        ++pos_;
        continue;
      }
      if (tok.type == Tok::kVarBegin) {
        ++pos_;
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->line = tok.line;
        ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(true));
        if (Cur().type != Tok::kVarEnd) return ErrorHere(absl::StrCat("expected '}}', found ", Describe(Cur())));
        ++pos_;
        body->push_back(std::move(s));
        continue;
      }
      if (tok.type != Tok::kBlockBegin) return ErrorHere(absl::StrCat("unexpected ", Describe(tok)));
      ++pos_;
      if (Cur().type != Tok::kName) return ErrorHere(absl::StrCat("expected a tag name, found ", Describe(Cur())));
      std::string tag = Cur().text;
      for (const auto& e : ends) {
        if (tag == e) {
          ++pos_;
          *end = tag;
          return absl::OkStatus();
        }
      }
      ASSIGN_OR_RETURN(auto stmt, ParseStatement(ends));
      body->push_back(std::move(stmt));
    }
  }

  absl::StatusOr<std::unique_ptr<Stmt>> ParseStatement(const std::vector<std::string>& enclosing_ends) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxParseDepth) return TooDeep();
    const Token& tok = Cur();
    std::string tag = tok.text;
    int line = tok.line;
    ++pos_;
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (tag == "if") {
      s->kind = StmtKind::kIf;
      std::string end = "elif";
      while (end == "elif") {
        ASSIGN_OR_RETURN(ExprPtr cond, ParseTupleExpr(true));
        RETURN_IF_ERROR(ExpectBlockEnd());
        Body body;
        RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &body, &end));
        s->branches.emplace_back(std::move(cond), std::move(body));
      }
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        RETURN_IF_ERROR(ParseBody({"endif"}, &s->else_body, &end));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (tag == "for") {
      s->kind = StmtKind::kFor;
      RETURN_IF_ERROR(ParseAssignTargets(&s->targets));
      if (!SkipName("in")) return ErrorHere(absl::StrCat("expected 'in' in for loop, found ", Describe(Cur())));
      ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(false));
      if (SkipName("if")) {
        ASSIGN_OR_RETURN(s->filter, ParseExpression(true));
      }
      if (IsName("recursive")) return ErrorHere("unsupported for-loop modifier 'recursive'");
      RETURN_IF_ERROR(ExpectBlockEnd());
      ++loop_depth_;
      std::string end;
      RETURN_IF_ERROR(ParseBody({"else", "endfor"}, &s->body, &end));
      --loop_depth_;
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        RETURN_IF_ERROR(ParseBody({"endfor"}, &s->else_body, &end));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (tag == "set") {
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == ".") {
        s->kind = StmtKind::kSet;
        s->targets.push_back(t_[pos_].text);
        pos_ += 2;
        ASSIGN_OR_RETURN(s->attr, ExpectName());
      } else {
        RETURN_IF_ERROR(ParseAssignTargets(&s->targets));
      }
      if (SkipOp("=")) {
        s->kind = StmtKind::kSet;
        ASSIGN_OR_RETURN(s->expr, ParseTupleExpr(true));
        RETURN_IF_ERROR(ExpectBlockEnd());
        return s;
      }
      if (!s->attr.empty() || s->targets.size() != 1) return ErrorHere("expected '=' in set");
      if (IsOp("|")) return ErrorHere("unsupported construct: filter on a block set ({% set x | filter %})");
      s->kind = StmtKind::kSetBlock;
      RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endset"}, &s->body, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (tag == "macro") {
      // A macro sees the template's top level; one defined inside a loop or macro would close over
      // that scope's variables, which this interpreter does not model.
      if (loop_depth_ > 0 || macro_depth_ > 0) {
        return Error(line, "unsupported construct: a macro defined inside a for loop or another macro");
      }
      s->kind = StmtKind::kMacro;
      ASSIGN_OR_RETURN(s->name, ExpectName());
      defined_.insert(s->name);
      RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        if (!s->params.empty()) RETURN_IF_ERROR(ExpectOp(","));
        if (IsOp(")")) break;
        ASSIGN_OR_RETURN(std::string param, ExpectName());
        defined_.insert(param);
        s->params.push_back(param);
        if (SkipOp("=")) {
          ASSIGN_OR_RETURN(ExprPtr d, ParseExpression(true));
          s->defaults.push_back(std::move(d));
        } else {
          s->defaults.push_back(nullptr);
        }
      }
      ++pos_;
      RETURN_IF_ERROR(ExpectBlockEnd());
      ++macro_depth_;
      current_macro_uses_caller_ = false;
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endmacro"}, &s->body, &end));
      --macro_depth_;
      s->uses_caller = current_macro_uses_caller_;
      if (Cur().type == Tok::kName) ++pos_;  // {% endmacro name %}
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) return Error(line, absl::StrCat("'", tag, "' outside of a for loop"));
      s->kind = tag == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (tag == "call") {
      // {% call [(params)] macro(args) %}body{% endcall %}: the macro runs with `caller` rendering body.
      s->kind = StmtKind::kCallBlock;
      if (IsOp("(")) {
        ++pos_;
        while (!IsOp(")")) {
          if (!s->params.empty()) RETURN_IF_ERROR(ExpectOp(","));
          if (IsOp(")")) break;
          ASSIGN_OR_RETURN(std::string param, ExpectName());
          defined_.insert(param);
          s->params.push_back(param);
          if (SkipOp("=")) {
            ASSIGN_OR_RETURN(ExprPtr d, ParseExpression(true));
            s->defaults.push_back(std::move(d));
          } else {
            s->defaults.push_back(nullptr);
          }
        }
        ++pos_;
      }
      ASSIGN_OR_RETURN(s->expr, ParseExpression(true));
      if (s->expr->kind != ExprKind::kCall) return Error(line, "{% call %} needs a macro call");
      RETURN_IF_ERROR(ExpectBlockEnd());
      int saved_loop_depth = loop_depth_;
      loop_depth_ = 0;  // break/continue cannot leave a caller body
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endcall"}, &s->body, &end));
      loop_depth_ = saved_loop_depth;
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    if (tag == "generation") {
      s->kind = StmtKind::kGeneration;
      RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endgeneration"}, &s->body, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return s;
    }
    static const std::set<std::string> kJinjaTags = {
        "include", "import", "from", "extends", "block", "filter", "with", "raw", "autoescape",
        "do", "trans", "pluralize", "endraw", "print"};
    if (kJinjaTags.count(tag)) return Error(line, absl::StrCat("unsupported tag '", tag, "'"));
    if (tag.rfind("end", 0) == 0 || tag == "elif" || tag == "else") {
      std::string expected = enclosing_ends.empty() ? "" : absl::StrCat(" (expected '", enclosing_ends.back(), "')");
      return Error(line, absl::StrCat("unexpected tag '", tag, "'", expected));
    }
    return Error(line, absl::StrCat("unsupported tag '", tag, "' (unknown tag)"));
  }

  // `a` or `a, b` or `(a, b)`: names that receive values (for targets, set targets).
  absl::Status ParseAssignTargets(std::vector<std::string>* targets) {
    bool paren = SkipOp("(");
    while (true) {
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      defined_.insert(name);
      targets->push_back(name);
      if (!SkipOp(",")) break;
      if (Cur().type != Tok::kName) break;
    }
    if (paren) RETURN_IF_ERROR(ExpectOp(")"));
    return absl::OkStatus();
  }

  // An expression, or several separated by commas (a tuple without parentheses).
  absl::StatusOr<ExprPtr> ParseTupleExpr(bool with_condexpr) {
    int line = Cur().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(with_condexpr));
    if (!IsOp(",")) return first;
    auto tuple = Node(ExprKind::kTuple, line);
    Attach(tuple.get(), std::move(first));
    while (SkipOp(",")) {
      if (Cur().type == Tok::kBlockEnd || Cur().type == Tok::kVarEnd || IsName("if")) break;
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(with_condexpr));
      Attach(tuple.get(), std::move(e));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxParseDepth) return TooDeep();
    if (with_condexpr) return ParseCondExpr();
    return ParseOr();
  }

  absl::StatusOr<ExprPtr> ParseCondExpr() {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxParseDepth) return TooDeep();
    int line = Cur().line;
    ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (SkipName("if")) {
      ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      ExprPtr else_expr;
      if (SkipName("else")) {
        ASSIGN_OR_RETURN(else_expr, ParseCondExpr());
      }
      auto node = Node(ExprKind::kCond, line);
      Attach(node.get(), std::move(expr));
      Attach(node.get(), std::move(cond));
      Attach(node.get(), std::move(else_expr));
      expr = std::move(node);
    }
    return expr;
  }

  ExprPtr Binary(std::string op, ExprPtr l, ExprPtr r, int line) {
    auto node = Node(ExprKind::kBinary, line);
    node->name = std::move(op);
    Attach(node.get(), std::move(l));
    Attach(node.get(), std::move(r));
    return node;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      int line = Cur().line;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      left = Binary("or", std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      int line = Cur().line;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      left = Binary("and", std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxParseDepth) return TooDeep();
    if (IsName("not")) {
      int line = Cur().line;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      auto node = Node(ExprKind::kUnary, line);
      node->name = "not";
      Attach(node.get(), std::move(operand));
      return node;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    int line = Cur().line;
    ASSIGN_OR_RETURN(ExprPtr expr, ParseMath1());
    ExprPtr node;
    while (true) {
      std::string op;
      if (Cur().type == Tok::kOp && (Cur().text == "==" || Cur().text == "!=" || Cur().text == "<" ||
                                     Cur().text == "<=" || Cur().text == ">" || Cur().text == ">=")) {
        op = Cur().text;
        ++pos_;
      } else if (IsName("in")) {
        op = "in";
        ++pos_;
      } else if (IsName("not") && Peek().type == Tok::kName && Peek().text == "in") {
        op = "notin";
        pos_ += 2;
      } else {
        break;
      }
      if (!node) {
        node = Node(ExprKind::kCompare, line);
        Attach(node.get(), std::move(expr));
      }
      ASSIGN_OR_RETURN(ExprPtr rhs, ParseMath1());
      node->ops.push_back(op);
      Attach(node.get(), std::move(rhs));
    }
    if (node) return node;
    return expr;
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      std::string op = Cur().text;
      int line = Cur().line;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      left = Binary(op, std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      int line = Cur().line;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      left = Binary("~", std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = Cur().text;
      int line = Cur().line;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      left = Binary(op, std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      int line = Cur().line;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      left = Binary("**", std::move(left), std::move(right), line);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxParseDepth) return TooDeep();
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      auto u = Node(ExprKind::kUnary, Cur().line);
      u->name = Cur().text;
      ++pos_;
      ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      Attach(u.get(), std::move(operand));
      node = std::move(u);
    } else {
      ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& tok = Cur();
    int line = tok.line;
    switch (tok.type) {
      case Tok::kName: {
        ++pos_;
        auto node = Node(ExprKind::kLiteral, line);
        if (tok.text == "true" || tok.text == "True") {
          node->literal = Value::Bool(true);
        } else if (tok.text == "false" || tok.text == "False") {
          node->literal = Value::Bool(false);
        } else if (tok.text == "none" || tok.text == "None") {
          node->literal = Value::None();
        } else {
          node->kind = ExprKind::kName;
          node->name = tok.text;
          // Inside a macro, jinja2 binds these to the extra arguments and the {% call %} body.
          if (macro_depth_ > 0 && (tok.text == "varargs" || tok.text == "kwargs")) {
            return Error(line, absl::StrCat("unsupported construct: '", tok.text, "' in a macro"));
          }
          if (macro_depth_ > 0 && tok.text == "caller") current_macro_uses_caller_ = true;
        }
        return node;
      }
      case Tok::kString: {
        std::string s;
        while (Cur().type == Tok::kString) s += t_[pos_++].text;
        auto node = Node(ExprKind::kLiteral, line);
        node->literal = Value::Str(std::move(s));
        return node;
      }
      case Tok::kInt: {
        ++pos_;
        auto node = Node(ExprKind::kLiteral, line);
        node->literal = Value::Int(tok.ival);
        return node;
      }
      case Tok::kFloat: {
        ++pos_;
        auto node = Node(ExprKind::kLiteral, line);
        node->literal = Value::Float(tok.fval);
        return node;
      }
      case Tok::kOp: {
        if (tok.text == "(") {
          ++pos_;
          if (SkipOp(")")) return Node(ExprKind::kTuple, line);
          ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(true));
          if (SkipOp(")")) return first;
          auto tuple = Node(ExprKind::kTuple, line);
          Attach(tuple.get(), std::move(first));
          while (SkipOp(",")) {
            if (IsOp(")")) break;
            ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(true));
            Attach(tuple.get(), std::move(e));
          }
          RETURN_IF_ERROR(ExpectOp(")"));
          return tuple;
        }
        if (tok.text == "[") {
          ++pos_;
          auto list = Node(ExprKind::kList, line);
          while (!IsOp("]")) {
            if (!list->children.empty()) RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("]")) break;
            ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(true));
            Attach(list.get(), std::move(e));
          }
          ++pos_;
          return list;
        }
        if (tok.text == "{") {
          ++pos_;
          auto dict = Node(ExprKind::kDict, line);
          while (!IsOp("}")) {
            if (!dict->children.empty()) RETURN_IF_ERROR(ExpectOp(","));
            if (IsOp("}")) break;
            ASSIGN_OR_RETURN(ExprPtr k, ParseExpression(true));
            RETURN_IF_ERROR(ExpectOp(":"));
            ASSIGN_OR_RETURN(ExprPtr v, ParseExpression(true));
            Attach(dict.get(), std::move(k));
            Attach(dict.get(), std::move(v));
          }
          ++pos_;
          return dict;
        }
        break;
      }
      default: break;
    }
    return ErrorHere(absl::StrCat("unexpected ", Describe(tok)));
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".")) {
        int line = Cur().line;
        ++pos_;
        if (Cur().type == Tok::kInt) {
          auto item = Node(ExprKind::kItem, line);
          auto idx = Node(ExprKind::kLiteral, line);
          idx->literal = Value::Int(Cur().ival);
          ++pos_;
          Attach(item.get(), std::move(node));
          Attach(item.get(), std::move(idx));
          node = std::move(item);
          continue;
        }
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        auto attr = Node(ExprKind::kAttr, line);
        attr->name = name;
        Attach(attr.get(), std::move(node));
        node = std::move(attr);
      } else if (IsOp("[")) {
        ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr obj) {
    int line = Cur().line;
    ++pos_;  // [
    std::vector<ExprPtr> parts(3);
    bool is_slice = false;
    int part = 0;
    while (!IsOp("]")) {
      if (SkipOp(":")) {
        is_slice = true;
        if (++part > 2) return ErrorHere("too many ':' in slice");
        continue;
      }
      if (parts[part]) return ErrorHere(absl::StrCat("unexpected ", Describe(Cur()), " in subscript"));
      if (IsOp(",")) return ErrorHere("unsupported construct: tuple subscript");
      ASSIGN_OR_RETURN(parts[part], ParseExpression(true));
    }
    ++pos_;
    if (!is_slice) {
      if (!parts[0]) return Error(line, "empty subscript");
      auto item = Node(ExprKind::kItem, line);
      Attach(item.get(), std::move(obj));
      Attach(item.get(), std::move(parts[0]));
      return item;
    }
    auto slice = Node(ExprKind::kSlice, line);
    Attach(slice.get(), std::move(obj));
    for (auto& p : parts) Attach(slice.get(), std::move(p));
    return slice;
  }

  absl::Status ParseCallArgs(Expr* node) {
    RETURN_IF_ERROR(ExpectOp("("));
    bool first = true;
    while (!IsOp(")")) {
      if (!first) RETURN_IF_ERROR(ExpectOp(","));
      first = false;
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) {
        // jinja2 order: positional, keyword, then at most one *args and one **kwargs.
        bool dict = IsOp("**");
        ++pos_;
        ExprPtr& slot = dict ? node->star_kwargs : node->star_args;
        if (slot || (!dict && node->star_kwargs)) {
          return ErrorHere("invalid syntax for function call expression (repeated *args/**kwargs)");
        }
        ASSIGN_OR_RETURN(slot, ParseExpression(true));
        continue;
      }
      if (node->star_args || node->star_kwargs) {
        return ErrorHere("invalid syntax for function call expression (argument after *args/**kwargs)");
      }
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == "=") {
        std::string key = Cur().text;
        pos_ += 2;
        ASSIGN_OR_RETURN(ExprPtr v, ParseExpression(true));
        node->kwargs.emplace_back(key, std::move(v));
      } else {
        if (!node->kwargs.empty()) return ErrorHere("positional argument after keyword argument");
        ASSIGN_OR_RETURN(ExprPtr v, ParseExpression(true));
        Attach(node, std::move(v));
      }
    }
    ++pos_;
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    int line = Cur().line;
    if (callee->kind == ExprKind::kAttr) {
      const std::string& m = callee->name;
      if (IsMutatingMethod(m)) {
        return Error(line, absl::StrCat("unsupported method '", m,
                                        "' (mutating methods are refused by the immutable sandbox)"));
      }
      if (!IsSupportedMethod(m)) return Error(line, absl::StrCat("unsupported method '", m, "'"));
    } else if (callee->kind == ExprKind::kName) {
      called_.emplace_back(callee->name, line);
    }
    auto call = Node(ExprKind::kCall, line);
    Attach(call.get(), std::move(callee));
    RETURN_IF_ERROR(ParseCallArgs(call.get()));
    return call;
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        int line = Cur().line;
        ++pos_;
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        while (IsOp(".")) {
          ++pos_;
          ASSIGN_OR_RETURN(std::string more, ExpectName());
          name += "." + more;
        }
        if (!IsSupportedFilter(name)) return Error(line, absl::StrCat("unsupported filter '", name, "'"));
        auto f = Node(ExprKind::kFilter, line);
        f->name = name;
        Attach(f.get(), std::move(node));
        if (IsOp("(")) RETURN_IF_ERROR(ParseCallArgs(f.get()));
        RETURN_IF_ERROR(CheckFilterNameArgs(*f));
        node = std::move(f);
      } else if (IsName("is")) {
        int line = Cur().line;
        ++pos_;
        auto t = Node(ExprKind::kTest, line);
        if (SkipName("not")) t->negated = true;
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        if (!IsSupportedTest(name)) return Error(line, absl::StrCat("unsupported test '", name, "'"));
        t->name = name;
        Attach(t.get(), std::move(node));
        if (IsOp("(")) {
          RETURN_IF_ERROR(ParseCallArgs(t.get()));
        } else if ((Cur().type == Tok::kName || Cur().type == Tok::kString || Cur().type == Tok::kInt ||
                    Cur().type == Tok::kFloat || IsOp("[") || IsOp("{")) &&
                   !IsName("else") && !IsName("or") && !IsName("and")) {
          if (IsName("is")) return ErrorHere("cannot chain tests with 'is'");
          ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
          ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          Attach(t.get(), std::move(arg));
        }
        node = std::move(t);
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  // select/reject/selectattr/rejectattr/map name a test or filter in a string argument: check it now.
  absl::Status CheckFilterNameArgs(const Expr& f) {
    size_t idx = 0;
    bool is_test = false;
    if (f.name == "select" || f.name == "reject") {
      idx = 1;
      is_test = true;
    } else if (f.name == "selectattr" || f.name == "rejectattr") {
      idx = 2;
      is_test = true;
    } else if (f.name == "map") {
      bool by_attr = false;
      for (const auto& kw : f.kwargs) by_attr |= kw.first == "attribute";
      if (by_attr) return absl::OkStatus();
      idx = 1;
    } else {
      return absl::OkStatus();
    }
    if (f.children.size() <= idx) {
      if (f.name == "map") return Error(f.line, "map needs a filter name or attribute=");
      return absl::OkStatus();
    }
    const Expr& arg = *f.children[idx];
    if (arg.kind != ExprKind::kLiteral || !arg.literal.is_string()) {
      return Error(f.line, absl::StrCat("unsupported construct: ", f.name, " with a non-literal ",
                                        is_test ? "test" : "filter", " name"));
    }
    const std::string& n = arg.literal.s;
    if (is_test ? !IsSupportedTest(n) : !IsSupportedFilter(n)) {
      return Error(f.line, absl::StrCat("unsupported ", is_test ? "test '" : "filter '", n, "' (in ", f.name, ")"));
    }
    return absl::OkStatus();
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  int macro_depth_ = 0;
  int depth_ = 0;          // DepthGuard
  int too_tall_line_ = 0;  // Attach: the line of the first expression over kMaxExprHeight
  bool current_macro_uses_caller_ = false;
  std::set<std::string> defined_;
  std::vector<std::pair<std::string, int>> called_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Program>> Parse(std::string_view source) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source));
  return Parser(std::move(tokens)).Run();
}

}  // namespace tessera::chat::jinja
