// Replaces Hive 2.3's class of the same name (first on the classpath) so the
// metastore binds its thrift port to a chosen host (127.0.0.1 by default)
// instead of 0.0.0.0: Hive 2.3 has no bind-host setting. Only the plain
// socket paths are kept; the dev metastore never uses SSL.
package org.apache.hadoop.hive.common.auth;

import java.net.InetSocketAddress;
import java.util.List;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TSocket;
import org.apache.thrift.transport.TTransport;
import org.apache.thrift.transport.TTransportException;

public class HiveAuthUtils {
  public static TTransport getSocketTransport(String host, int port, int timeout)
      throws TTransportException {
    return new TSocket(host, port, timeout);
  }

  public static TTransport getSSLSocket(String host, int port, int timeout)
      throws TTransportException {
    throw unsupported();
  }

  public static TTransport getSSLSocket(String host, int port, int timeout, String ts, String pw)
      throws TTransportException {
    throw unsupported();
  }

  public static TTransport getSSLSocket(
      String host, int port, int socketTimeout, int connectTimeout, String ts, String pw)
      throws TTransportException {
    throw unsupported();
  }

  public static TServerSocket getServerSocket(String host, int port) throws TTransportException {
    String bind = host != null ? host : System.getProperty("tributary.bind.host", "127.0.0.1");
    return new TServerSocket(new InetSocketAddress(bind, port));
  }

  public static TServerSocket getServerSSLSocket(
      String host, int port, String ks, String pw, List<String> excluded)
      throws TTransportException {
    throw unsupported();
  }

  private static TTransportException unsupported() {
    return new TTransportException("SSL is not supported by the Tributary dev metastore");
  }
}
