// Hive 2.3 checks table locations through Hadoop's FileSystem, and no
// hadoop-aws jar is available here. This stub, registered for s3:// and
// s3a://, reports every path as an existing directory so tables can be
// registered with object-store locations. The metastore never reads data.
package tributary;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.net.URI;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.util.Progressable;

public class S3StubFileSystem extends FileSystem {
  private URI uri;
  private Path workingDir = new Path("/");

  @Override
  public void initialize(URI name, org.apache.hadoop.conf.Configuration conf) throws IOException {
    super.initialize(name, conf);
    this.uri = URI.create(name.getScheme() + "://" + name.getAuthority());
  }

  @Override
  public String getScheme() {
    return uri == null ? "s3" : uri.getScheme();
  }

  @Override
  public URI getUri() {
    return uri;
  }

  @Override
  public FSDataInputStream open(Path f, int bufferSize) throws IOException {
    throw new FileNotFoundException("S3 stub cannot read " + f);
  }

  @Override
  public FSDataOutputStream create(Path f, FsPermission p, boolean o, int b, short r, long s,
      Progressable pr) throws IOException {
    throw new IOException("S3 stub cannot write " + f);
  }

  @Override
  public FSDataOutputStream append(Path f, int bufferSize, Progressable p) throws IOException {
    throw new IOException("S3 stub cannot append to " + f);
  }

  @Override
  public boolean rename(Path src, Path dst) {
    return true;
  }

  @Override
  public boolean delete(Path f, boolean recursive) {
    return true;
  }

  @Override
  public FileStatus[] listStatus(Path f) {
    return new FileStatus[0];
  }

  @Override
  public void setWorkingDirectory(Path dir) {
    workingDir = dir;
  }

  @Override
  public Path getWorkingDirectory() {
    return workingDir;
  }

  @Override
  public boolean mkdirs(Path f, FsPermission permission) {
    return true;
  }

  @Override
  public FileStatus getFileStatus(Path f) {
    return new FileStatus(0, true, 1, 0, 0, makeQualified(f));
  }
}
