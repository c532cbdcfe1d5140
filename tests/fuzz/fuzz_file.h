// For harnesses whose parser opens a path (the memory-mapped checkpoint readers): one private
// scratch file per fuzzing process, rewritten with each input.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace fuji::fuzz {

// A file created once in $TMPDIR (mkstemp: O_EXCL, mode 0600) and removed at exit; Write replaces
// its contents. Not thread-safe (libFuzzer runs one input at a time).
class ScratchFile {
 public:
  static ScratchFile& Get() {
    static ScratchFile* file = new ScratchFile();  // never destroyed: atexit removes the file
    return *file;
  }
  // The path, holding exactly these bytes.
  const std::string& Write(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) Die("ftruncate");
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) Die("pwrite");
      done += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  ScratchFile() {
    const char* dir = std::getenv("TMPDIR");
    std::string name = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/fuji-fuzz-XXXXXX";
    fd_ = ::mkstemp(name.data());
    if (fd_ < 0) Die("mkstemp");
    path_ = name;
    std::atexit([] { ::unlink(Get().path_.c_str()); });
  }
  [[noreturn]] static void Die(const char* what) {
    std::perror(what);
    std::abort();
  }
  int fd_ = -1;
  std::string path_;
};

}  // namespace fuji::fuzz
